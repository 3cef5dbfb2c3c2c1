"""What the server serves for an espnet2 answer (the rule of docs/model-families.md)."""

from __future__ import annotations

import re

# The special symbols of the vocabularies the tests and benchmarks build: <blank>, <unk>,
# <sos/eos>; OWSM's <eng>, <asr>, <st_eng>, <notimestamps>, <0.00>, ... (no text token of
# theirs is written in angle brackets).
SPECIAL_SYMBOLS = re.compile(r"<[^<>\s]+>")


def served_text(text: str) -> str:
    """espnet2's text without special symbols, spaces collapsed: the served text."""
    return " ".join(SPECIAL_SYMBOLS.sub("", text).split())
