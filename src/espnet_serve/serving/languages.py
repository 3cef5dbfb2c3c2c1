"""ISO-639-1 language codes, and the names OpenAI's ``verbose_json`` reports for them."""

from __future__ import annotations

import re
from functools import cache


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
