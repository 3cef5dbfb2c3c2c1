"""Transcribe recordings of any length with an ``InferenceSession``, no server needed.

The recording is read in blocks (:func:`espnet_serve.ingest.open_audio_stream`),
cut into speech segments as it goes (:mod:`espnet_serve.longform.segmenter`),
decoded ``batch_size`` segments per ``forward_batch`` call and, when asked,
word-timed by CTC alignment (:mod:`espnet_serve.longform.align`). Memory follows
the batch, not the recording.

Example::

    session = InferenceSession.from_pretrained(
        "model.tar.gz", trust_user_code=True, batched_backend=True, prefer_model_batch=True
    )
    transcript = LongFormTranscriber(session).transcribe("meeting.flac", word_timestamps=True)
    print(to_srt(transcript.segments))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from espnet_serve.bundle import train_config_sample_rate
from espnet_serve.ingest import IngestLimits, open_audio_stream
from espnet_serve.longform.align import CtcAligner
from espnet_serve.longform.segmenter import AudioSegment, SegmentationOptions, segment_stream
from espnet_serve.longform.transcript import Segment, Transcript, make_segment
from espnet_serve.transcripts import transcript_text

DEFAULT_BATCH_SIZE = 16
# Progress callback: (seconds of audio read so far, declared duration or None).
Progress = Callable[[float, float | None], None]


class SegmentDecodeError(RuntimeError):
    """A segment of the recording could not be decoded (its time is in the message)."""


class LongFormTranscriber:
    """Segments, batches, decodes and aligns long recordings with one session.

    Args:
        session: An ``InferenceSession`` of an espnet2 ASR model (build it with
            ``batched_backend=True, prefer_model_batch=True`` to decode each batch
            of segments in one call).
        sample_rate: The model's sample rate (default: its training config's).
        batch_size: Segments per ``forward_batch`` call.
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
        self.session = session
        backend = session.model
        self.sample_rate = sample_rate or train_config_sample_rate(vars(backend.asr_train_args))
        self.batch_size = batch_size
        self.options = options or SegmentationOptions()
        self.limits = limits or IngestLimits(max_seconds=math.inf)
        self._aligner: CtcAligner | None = None

    @property
    def aligner(self) -> CtcAligner:
        """The CTC aligner of the session's model (built on first use)."""
        if self._aligner is None:
            self._aligner = CtcAligner(self.session.model, self.sample_rate)
        return self._aligner

    def segments(
        self,
        source: str | Path | bytes | BinaryIO,
        *,
        word_timestamps: bool = False,
        progress: Progress | None = None,
    ) -> Iterator[Segment]:
        """Decoded segments of ``source``, in order, batch by batch.

        Raises:
            AudioInputError: If the audio is refused.
            SegmentDecodeError: If a segment cannot be decoded.
        """
        with open_audio_stream(source, target_rate=self.sample_rate, limits=self.limits) as audio:
            declared = audio.info.declared_seconds
            batch: list[AudioSegment] = []
            for segment in segment_stream(audio, self.sample_rate, self.options, declared):
                batch.append(segment)
                if len(batch) == self.batch_size:
                    yield from self.decode(batch, word_timestamps=word_timestamps)
                    batch = []
                    if progress is not None:
                        progress(audio.samples_read / self.sample_rate, declared)
            yield from self.decode(batch, word_timestamps=word_timestamps)
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
        """Decode (and align) one batch of segments.

        Raises:
            SegmentDecodeError: If a segment cannot be decoded.
        """
        if not batch:
            return []
        clips = [segment.samples for segment in batch]
        outputs = self.session.forward_batch(clips, return_exceptions=True)
        texts = []
        for segment, output in zip(batch, outputs, strict=True):
            if isinstance(output, BaseException):
                raise SegmentDecodeError(
                    f"segment {segment.index} ({segment.start:.2f}-{segment.end:.2f} s) "
                    f"could not be decoded: {output}"
                ) from output
            texts.append(transcript_text(output))
        alignments = self.aligner.align(clips, texts) if word_timestamps else [None] * len(batch)
        return [
            make_segment(segment, text, alignment)
            for segment, text, alignment in zip(batch, texts, alignments, strict=True)
        ]
