"""Transcribe recordings of any length with an ``InferenceSession``, no server needed.

The recording is read in blocks (:func:`espnet_serve.audio.ingest.open_audio_stream`),
cut into speech segments as it goes (:mod:`espnet_serve.audio.segmenter`), and
decoded ``batch_size`` segments at a time by the segment pipeline
(:class:`espnet_serve.pipeline.decode.SegmentDecoder`), words timed when asked.
Memory follows the batch, not the recording.

Example::

    session = InferenceSession.from_pretrained(
        "model.tar.gz", trust_user_code=True, batched_backend=True, prefer_model_batch=True
    )
    transcript = Transcriber(session).transcribe("meeting.flac", word_timestamps=True)
    print(to_srt(transcript.segments))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from espnet_serve.audio.ingest import IngestLimits, open_audio_stream
from espnet_serve.audio.segmenter import AudioSegment, SegmentationOptions, segment_stream
from espnet_serve.bundle.layout import train_config_sample_rate
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.types import Segment, SegmentDecodeError, Transcript

DEFAULT_BATCH_SIZE = 16
# Progress callback: (seconds of audio read so far, declared duration or None).
Progress = Callable[[float, float | None], None]


class Transcriber:
    """Segments, batches, decodes and aligns recordings with one session.

    Args:
        session: An ``InferenceSession`` of an espnet2 ASR model (build it with
            ``batched_backend=True, prefer_model_batch=True`` to decode each batch
            of segments in one call).
        sample_rate: The model's sample rate (default: its training config's).
        batch_size: Segments decoded per call.
        options: How speech is found and cut.
        limits: What audio to accept (default: no length limit).
    """

    def __init__(
        self,
        session: Any,
        *,
        sample_rate: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        options: SegmentationOptions | None = None,
        limits: IngestLimits | None = None,
    ) -> None:
        rate = sample_rate or train_config_sample_rate(_train_config(session.model))
        self.decoder = SegmentDecoder(session, rate)
        self.sample_rate = rate
        self.batch_size = batch_size
        self.options = options or SegmentationOptions()
        self.limits = limits or IngestLimits(max_seconds=math.inf)

    def segments(
        self,
        source: str | Path | bytes | BinaryIO,
        *,
        word_timestamps: bool = False,
        progress: Progress | None = None,
    ) -> Iterator[Segment]:
        """Decoded segments of ``source``, in order, batch by batch.

        A segment the model cut into timed utterances (OWSM's time tokens) gives them in
        its place, numbered in order.

        Raises:
            AudioInputError: If the audio is refused.
            SegmentDecodeError: If a segment cannot be decoded.
            ValueError: If word times are asked of a model without a CTC head.
        """
        if word_timestamps and not self.decoder.word_timestamps:
            raise ValueError("Word timestamps need a model with a CTC head and a tokenizer.")
        shown = 0
        with open_audio_stream(source, target_rate=self.sample_rate, limits=self.limits) as audio:
            declared = audio.info.declared_seconds
            found = segment_stream(audio, self.sample_rate, self.options, declared)
            for batch in _batches(found, self.batch_size):
                for decoded in self.decode(batch, word_timestamps=word_timestamps):
                    parts = decoded.shown(shown)
                    shown += len(parts)
                    yield from parts
                if progress is not None:
                    progress(audio.samples_read / self.sample_rate, declared)
            if progress is not None:
                progress(audio.samples_read / self.sample_rate, declared)

    def transcribe(
        self,
        source: str | Path | bytes | BinaryIO,
        *,
        word_timestamps: bool = False,
        progress: Progress | None = None,
    ) -> Transcript:
        """The whole transcript of ``source`` (see :meth:`segments`)."""
        duration = 0.0

        def track(read: float, declared: float | None) -> None:
            nonlocal duration
            duration = read
            if progress is not None:
                progress(read, declared)

        segments = list(self.segments(source, word_timestamps=word_timestamps, progress=track))
        return Transcript(segments=segments, duration=round(duration, 3))

    def decode(
        self, batch: Sequence[AudioSegment], *, word_timestamps: bool = False
    ) -> list[Segment]:
        """Decode one batch of segments; the first that fails raises its error.

        Raises:
            SegmentDecodeError: If a segment cannot be decoded.
        """
        segments = []
        for outcome in self.decoder.decode(batch, words=word_timestamps):
            if isinstance(outcome, SegmentDecodeError):
                raise outcome
            segments.append(outcome)
        return segments


def _batches(segments: Iterable[AudioSegment], size: int) -> Iterator[list[AudioSegment]]:
    """``segments`` in lists of ``size`` (the last one shorter), as they come."""
    batch: list[AudioSegment] = []
    for segment in segments:
        batch.append(segment)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _train_config(backend: Any) -> dict[str, Any]:
    """The training config of an espnet2 class's model (``asr_train_args``, ``s2t_train_args``)."""
    for name, value in vars(backend).items():
        if name.endswith("_train_args") and value is not None:
            return vars(value)
    return {}
