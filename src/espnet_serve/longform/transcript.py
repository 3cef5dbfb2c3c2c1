"""A long recording's transcript: timed segments and words, stitched in order."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from espnet_serve.longform.align import Alignment, TimedWord
from espnet_serve.longform.segmenter import AudioSegment


@dataclass(frozen=True)
class Segment:
    """One decoded segment; times in seconds from the start of the recording.

    Attributes:
        id: Position in the recording (0, 1, ...).
        start: Start of the speech (voice activity).
        end: End of the speech.
        text: The transcript of the segment.
        words: Each word with its time, when word timing was asked for.
        token_ids: The transcript's token ids, when word timing was asked for.
        avg_logprob: Mean CTC log-probability of the aligned frames (0.0 without alignment).
        no_speech_prob: One minus the segment's mean voice-activity probability.
    """

    id: int
    start: float
    end: float
    text: str
    words: tuple[TimedWord, ...] = ()
    token_ids: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0

    @property
    def compression_ratio(self) -> float:
        """Bytes of the text over its zlib-compressed bytes, as Whisper reports it."""
        data = self.text.encode("utf-8")
        return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def make_segment(audio: AudioSegment, text: str, alignment: Alignment | None = None) -> Segment:
    """The :class:`Segment` of a decoded :class:`AudioSegment`, words moved to recording time.

    Without an alignment (not asked for, or the transcript could not be aligned),
    ``words`` is empty.
    """
    if alignment is None:
        return Segment(
            audio.index, audio.start, audio.end, text.strip(), no_speech_prob=audio.no_speech_prob
        )
    words = tuple(
        TimedWord(w.word, round(audio.offset + w.start, 3), round(audio.offset + w.end, 3))
        for w in alignment.words
    )
    return Segment(
        id=audio.index,
        start=round(audio.start, 3),
        end=round(audio.end, 3),
        text=text.strip(),
        words=words,
        token_ids=alignment.token_ids,
        avg_logprob=alignment.avg_logprob,
        no_speech_prob=audio.no_speech_prob,
    )


@dataclass(frozen=True)
class Transcript:
    """All segments of a recording, in order.

    Attributes:
        segments: The decoded segments (those with no text included).
        duration: Length of the recording in seconds.
    """

    segments: Sequence[Segment]
    duration: float

    @property
    def text(self) -> str:
        """The segments' texts joined by spaces."""
        return join_texts(segment.text for segment in self.segments)

    @property
    def words(self) -> list[TimedWord]:
        """Every timed word of the recording, in order."""
        return [word for segment in self.segments for word in segment.words]


def join_texts(texts: Iterable[str]) -> str:
    """Join segment texts with single spaces, skipping empty ones."""
    return " ".join(text for text in texts if text)
