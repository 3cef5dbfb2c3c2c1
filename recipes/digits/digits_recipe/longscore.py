"""Score a long recording's timed transcript against the truth of :mod:`digits_recipe.longfile`.

Word error rate over the whole text, and time errors: a segment is matched to a
digit string when each is the other's only overlap (one segment per string, as
the strings are separated by pauses); the words of a matched pair are compared
one to one when the segment's text is the string's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import editdistance
import numpy as np

from digits_recipe.longfile import TimedString


class TimedText(Protocol):
    """A decoded segment: its time and text, and its words when they were timed."""

    start: float
    end: float
    text: str
    words: Sequence  # items with .start and .end


@dataclass
class LongFormScore:
    """Errors of one transcript; times in seconds (absolute differences)."""

    word_errors: int
    reference_words: int
    strings: int
    segments: int
    matched: int  # strings with exactly one segment, which overlaps only them
    segment_start: list[float] = field(default_factory=list)
    segment_end: list[float] = field(default_factory=list)
    word_start: list[float] = field(default_factory=list)
    word_end: list[float] = field(default_factory=list)

    @property
    def wer(self) -> float:
        """Word error rate (0..1)."""
        return self.word_errors / self.reference_words

    def summary(self) -> dict:
        """Counts, WER and median / p95 of each time error (JSON-ready)."""
        times = {
            name: _quantiles(values)
            for name, values in (
                ("segment_start", self.segment_start),
                ("segment_end", self.segment_end),
                ("word_start", self.word_start),
                ("word_end", self.word_end),
            )
        }
        return {
            "wer": round(self.wer, 5),
            "word_errors": self.word_errors,
            "reference_words": self.reference_words,
            "strings": self.strings,
            "segments": self.segments,
            "matched_strings": self.matched,
            "time_errors_s": times,
        }


def _quantiles(values: Sequence[float]) -> dict:
    if not values:
        return {"count": 0, "median": None, "p95": None}
    array = np.asarray(values)
    return {
        "count": len(values),
        "median": round(float(np.median(array)), 4),
        "p95": round(float(np.percentile(array, 95)), 4),
    }


def _overlaps(a_start: float, a_end: float, b_start: float, b_end: float) -> bool:
    return a_start < b_end and b_start < a_end


def score(segments: Sequence[TimedText], truth: Sequence[TimedString]) -> LongFormScore:
    """Score ``segments`` (in order) against ``truth``."""
    hypothesis = " ".join(s.text for s in segments if s.text).split()
    reference = " ".join(s.text for s in truth).split()
    result = LongFormScore(
        word_errors=editdistance.eval(hypothesis, reference),
        reference_words=len(reference),
        strings=len(truth),
        segments=len(segments),
        matched=0,
    )
    for string in truth:
        hits = [s for s in segments if _overlaps(s.start, s.end, string.start, string.end)]
        if len(hits) != 1:
            continue
        (segment,) = hits
        others = [t for t in truth if _overlaps(segment.start, segment.end, t.start, t.end)]
        if len(others) != 1:
            continue
        result.matched += 1
        result.segment_start.append(abs(segment.start - string.start))
        result.segment_end.append(abs(segment.end - string.end))
        if segment.text == string.text and len(segment.words) == len(string.words):
            for said, heard in zip(string.words, segment.words, strict=True):
                result.word_start.append(abs(heard.start - said.start))
                result.word_end.append(abs(heard.end - said.end))
    return result
