"""ISO-639 language codes (pycountry's tables): names, and two-letter ↔ three-letter codes.

OpenAI clients name languages by ISO-639-1 code (``en``); OWSM's language and task
tokens use three-letter ISO-639-3 codes (``<eng>``, ``<st_deu>``).
"""

from __future__ import annotations

import re
from functools import cache

# OWSM's language tokens: the vocabulary's range from the first to the last of these (the
# range espnet2's Speech2Language reads).
FIRST_LANGUAGE_SYMBOL = "<abk>"
LAST_LANGUAGE_SYMBOL = "<zul>"


@cache
def language_name(code: str) -> str | None:
    """The full lowercase English name of an ISO-639-1 code (``en`` -> ``english``), else None.

    From pycountry's ISO-639 tables, without qualifiers: ``el`` is ``modern greek``.
    """
    import pycountry

    if len(code) != 2 or not code.isalpha():
        return None
    language = pycountry.languages.get(alpha_2=code.lower())
    if language is None:
        return None
    return re.sub(r"\s*\(.*?\)", "", language.name).strip().lower()


@cache
def two_letter_code(alpha_3: str) -> str | None:
    """The ISO-639-1 code of an ISO-639-3 code (``eng`` -> ``en``), else None."""
    import pycountry

    language = pycountry.languages.get(alpha_3=alpha_3.lower())
    return getattr(language, "alpha_2", None) if language is not None else None


@cache
def three_letter_code(alpha_2: str) -> str | None:
    """The ISO-639-3 code of an ISO-639-1 code (``en`` -> ``eng``), else None."""
    import pycountry

    language = pycountry.languages.get(alpha_2=alpha_2.lower())
    return language.alpha_3 if language is not None else None
