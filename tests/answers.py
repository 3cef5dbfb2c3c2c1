"""What the server serves for an espnet2 answer (the rule of docs/model-families.md)."""

from __future__ import annotations

import re

# The special symbols of the vocabularies the tests and benchmarks build.
SPECIAL_SYMBOLS = re.compile(r"<(?:blank|unk|sos/eos)>")


def served_text(text: str) -> str:
    """espnet2's text without special symbols, spaces collapsed: the served text."""
    return " ".join(SPECIAL_SYMBOLS.sub("", text).split())
