"""Score a model on a held-out set: word and sentence error rates, real-time factor.

Every clip goes through :func:`espnet_serve.audio.ingest.read_audio_file`, which
mixes it down to mono and resamples it to the model's rate, and is decoded whole
through the segment pipeline (:class:`espnet_serve.pipeline.decode.SegmentDecoder`),
``batch_size`` clips per call. Word error rate is the word-level edit distance over
reference words; sentence error rate the share of clips whose hypothesis differs;
real-time factor decoding time over audio duration.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import editdistance

from espnet_serve.assets import HeldoutClip
from espnet_serve.audio.ingest import AudioInputError
from espnet_serve.audio.segmenter import AudioSegment
from espnet_serve.bundle.layout import DEFAULT_SAMPLE_RATE
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.types import SegmentDecodeError

DEFAULT_BATCH_SIZE = 16


@dataclass
class EvalReport:
    """Scores of one evaluation run.

    Attributes:
        model: The evaluated model (archive, directory or tag).
        count: Number of utterances.
        ref_words: Number of reference words.
        word_errors: Word-level edit distance summed over utterances.
        wer: ``word_errors / ref_words``.
        ser: Fraction of utterances whose hypothesis differs from the reference.
        rtf: Decoding seconds per second of audio.
        audio_seconds: Total audio duration.
        decode_seconds: Total decoding time (model call and ``output_fn``).
        load_seconds: Time to unpack and load the model.
        mode: ``batched`` (the batched backend) or ``reference`` (``Speech2Text``).
        batch_size: Clips per backend call (1 for ``reference``).
        sample_rate: The model's rate, which every clip was resampled to.
        decoding_overrides: Decoding options that replaced the bundle's.
        errors: ``{"uttid", "ref", "hyp"}`` for each wrong utterance, plus
            ``"error"`` for one the model failed on (its ``hyp`` is empty).
    """

    model: str
    count: int
    ref_words: int
    word_errors: int
    wer: float
    ser: float
    rtf: float
    audio_seconds: float
    decode_seconds: float
    load_seconds: float
    mode: str = "batched"
    batch_size: int = DEFAULT_BATCH_SIZE
    sample_rate: int = DEFAULT_SAMPLE_RATE
    decoding_overrides: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)


def _read_clips(clips: Sequence[HeldoutClip], sample_rate: int) -> list[AudioSegment]:
    """Each clip as one whole segment at ``sample_rate``; a refused clip's error names its file."""
    segments = []
    for index, clip in enumerate(clips):
        try:
            samples = clip.read_audio(sample_rate)
        except AudioInputError as exc:
            raise type(exc)(f"{clip.path}: {exc}") from exc
        segments.append(AudioSegment.whole(index, samples, sample_rate))
    return segments


def evaluate(
    decoder: SegmentDecoder,
    clips: Sequence[HeldoutClip],
    *,
    model: str,
    load_seconds: float,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> EvalReport:
    """Decode ``clips`` in chunks of ``batch_size`` and score them.

    A session built with ``prefer_model_batch`` decodes each chunk in one
    backend call; otherwise ``forward_batch`` makes one call per clip. A clip
    the model fails on counts as an empty hypothesis.

    Args:
        decoder: The loaded model's segment decoder (its sample rate is the clips' rate).
        clips: Held-out clips.
        model: Model name for the report.
        load_seconds: Model load time for the report.
        batch_size: Clips per ``forward_batch`` call.

    Returns:
        EvalReport: The scores.

    Raises:
        AudioInputError: If a clip is not acceptable audio.
    """
    sample_rate = decoder.sample_rate
    ref_words = word_errors = 0
    audio_seconds = decode_seconds = 0.0
    errors: list[dict[str, str]] = []
    for start in range(0, len(clips), batch_size):
        chunk = clips[start : start + batch_size]
        segments = _read_clips(chunk, sample_rate)
        begin = time.perf_counter()
        outcomes = decoder.decode(segments)
        decode_seconds += time.perf_counter() - begin
        audio_seconds += sum(segment.samples.size for segment in segments) / sample_rate
        for clip, outcome in zip(chunk, outcomes, strict=True):
            failed = isinstance(outcome, SegmentDecodeError)
            hyp = "" if failed else outcome.text
            ref = clip.text.split()
            ref_words += len(ref)
            word_errors += editdistance.eval(ref, hyp.split())
            if failed or hyp.split() != ref:
                error = {"uttid": clip.uttid, "ref": clip.text, "hyp": hyp}
                if failed:
                    error["error"] = f"{outcome.code}: {outcome}"
                errors.append(error)
    batched = decoder.session.prefer_model_batch
    count = len(clips)
    return EvalReport(
        model=model,
        count=count,
        ref_words=ref_words,
        word_errors=word_errors,
        wer=word_errors / max(ref_words, 1),
        ser=len(errors) / max(count, 1),
        rtf=decode_seconds / max(audio_seconds, 1e-9),
        audio_seconds=audio_seconds,
        decode_seconds=decode_seconds,
        load_seconds=load_seconds,
        mode="batched" if batched else "reference",
        batch_size=batch_size if batched else 1,
        sample_rate=sample_rate,
        errors=errors,
    )
