"""Text → sentences to synthesise one at a time (long input is spoken as each is ready).

A sentence ends at ``.``, ``!``, ``?``, ``;`` or ``:`` followed by a space, or at a line
break. A sentence longer than :data:`MAX_SENTENCE_CHARS` is cut at its last comma, else
its last space, before the limit: a model's inference time and memory grow with its input.
"""

from __future__ import annotations

import re

MAX_SENTENCE_CHARS = 300
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\s*\n\s*")


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """The sentences of ``text``, in order, stripped, none empty, none over ``max_chars``."""
    sentences: list[str] = []
    for sentence in SENTENCE_END.split(text):
        sentence = sentence.strip()
        while len(sentence) > max_chars:
            head = sentence[:max_chars]
            comma, space = head.rfind(", "), head.rfind(" ")
            cut = comma + 1 if comma > 0 else space if space > 0 else max_chars
            sentences.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            sentences.append(sentence)
    return sentences
