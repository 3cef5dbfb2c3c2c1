"""What decoding produces: words, segments, transcripts and errors, from the backend to the wire.

One :class:`Word` and one :class:`Segment` travel the whole way: the segment
decoder (:mod:`espnet_serve.pipeline.decode`) makes them, the model service
returns them to the API service unchanged, and the OpenAI formats render them.
Times are in seconds from the start of the recording.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict


class Word(BaseModel):
    """One word and its time (OpenAI's ``TranscriptionWord``)."""

    model_config = ConfigDict(frozen=True)

    word: str
    start: float
    end: float


class Segment(BaseModel):
    """One decoded segment of a recording.

    Attributes:
        id: Position in the recording (0, 1, ...).
        start: Start of the speech (voice activity).
        end: End of the speech.
        text: The transcript of the segment.
        words: Each word with its time, when word timing was asked for.
        tokens: The transcript's token ids, when word timing was asked for.
        avg_logprob: Mean CTC log-probability of the aligned frames (0.0 without alignment).
        no_speech_prob: One minus the segment's mean voice-activity probability.
        language: ISO-639-1 code of the language the model decoded the speech as (the
            requested one, or the one a multilingual model identified), if known.
        utterances: The utterances the model timed itself in this segment (OWSM's time
            tokens), each a segment in recording time; empty if it did not.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    tokens: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    language: str | None = None
    utterances: tuple[Segment, ...] = ()

    def shown(self, first_id: int) -> tuple[Segment, ...]:
        """What a transcript shows of this segment, numbered from ``first_id``.

        Its utterances where the model timed them, else the segment itself.
        """
        parts = self.utterances or (self,)
        return tuple(part.model_copy(update={"id": first_id + n}) for n, part in enumerate(parts))

    @property
    def compression_ratio(self) -> float:
        """Bytes of the text over its zlib-compressed bytes, as Whisper reports it."""
        data = self.text.encode("utf-8")
        return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


class Transcript(BaseModel):
    """All segments of a recording, in order.

    Attributes:
        segments: The decoded segments (those with no text included).
        duration: Length of the recording in seconds.
    """

    model_config = ConfigDict(frozen=True)

    segments: Sequence[Segment]
    duration: float

    @property
    def text(self) -> str:
        """The segments' texts joined by spaces."""
        return join_texts(segment.text for segment in self.segments)

    @property
    def language(self) -> str | None:
        """The first segment's language, if known (Whisper reports one per recording)."""
        return next((s.language for s in self.segments if s.language is not None), None)

    @property
    def words(self) -> list[Word]:
        """Every timed word of the recording, in order."""
        return [word for segment in self.segments for word in segment.words]


def join_texts(texts: Iterable[str]) -> str:
    """Join segment texts with single spaces, skipping empty ones."""
    return " ".join(text for text in texts if text)


INVALID_AUDIO = "invalid_audio"  # the model refuses this audio: the input's fault
DECODE_FAILED = "decode_failed"  # decoding raised: the model's or the machine's fault
BAD_MODEL_OUTPUT = "bad_model_output"  # the output holds no transcript: the model's fault


class SegmentDecodeError(RuntimeError):
    """A segment could not be decoded.

    Attributes:
        code: :data:`INVALID_AUDIO`, :data:`DECODE_FAILED` or :data:`BAD_MODEL_OUTPUT`.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def invalid_input(self) -> bool:
        """Whether the audio itself is at fault (else the model or the machine)."""
        return self.code == INVALID_AUDIO


Outcome = Segment | SegmentDecodeError
