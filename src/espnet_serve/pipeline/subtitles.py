"""Subtitle formats of a transcript: SubRip (``.srt``) and WebVTT (``.vtt``)."""

from __future__ import annotations

from collections.abc import Iterable

from espnet_serve.pipeline.types import Segment


def _timestamp(seconds: float, decimal_marker: str) -> str:
    """``HH:MM:SS<marker>mmm`` of ``seconds`` (rounded to the millisecond)."""
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def to_srt(segments: Iterable[Segment]) -> str:
    """SubRip subtitles: one numbered cue per segment with text."""
    cues = [
        f"{number}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for number, s in enumerate((s for s in segments if s.text), start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: Iterable[Segment]) -> str:
    """WebVTT subtitles: the header, then one cue per segment with text."""
    cues = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n"
        for s in segments
        if s.text
    ]
    return "\n".join(["WEBVTT\n", *cues])
