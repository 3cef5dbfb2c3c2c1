"""Warm-up: decode speech-like clips through the segment pipeline before reporting ready."""

from __future__ import annotations

import numpy as np

from espnet_serve.audio.segmenter import AudioSegment
from espnet_serve.pipeline.decode import SegmentDecodeError, SegmentDecoder

WARMUP_SECONDS = (1.5, 0.8)
FUNDAMENTAL_HZ = 120.0
SYLLABLES_PER_SECOND = 4.0


class WarmupError(RuntimeError):
    """The model could not decode the warm-up clips."""


def speech_like(seconds: float, sample_rate: int) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal: exercises the whole decoder path."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    voice = sum(
        np.sin(2 * np.pi * FUNDAMENTAL_HZ * k * t) / k
        for k in range(1, 20)
        if FUNDAMENTAL_HZ * k < sample_rate / 2
    )
    envelope = np.clip(np.sin(np.pi * SYLLABLES_PER_SECOND * t), 0.0, None) ** 2
    return (0.3 * voice * envelope).astype(np.float32)


def warm_up(decoder: SegmentDecoder) -> list[str]:
    """Decode the warm-up clips in one batch (words timed when the model can) and check each.

    Returns:
        list[str]: The transcripts (their content is not judged: any text is fine).

    Raises:
        WarmupError: If a clip fails to decode or the output has no transcript.
    """
    rate = decoder.sample_rate
    clips = [
        AudioSegment.whole(index, speech_like(seconds, rate), rate)
        for index, seconds in enumerate(WARMUP_SECONDS)
    ]
    texts = []
    for clip, outcome in zip(
        clips, decoder.decode(clips, words=decoder.word_timestamps), strict=True
    ):
        if isinstance(outcome, SegmentDecodeError):
            raise WarmupError(f"a {clip.end:g} s clip: {outcome}") from outcome
        texts.append(outcome.text)
    return texts
