"""Warm-up: decode speech-like clips before the model service reports ready."""

from __future__ import annotations

import numpy as np

from espnet_serve.session import InferenceSession
from espnet_serve.transcripts import transcript_text

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


def warm_up(session: InferenceSession, sample_rate: int) -> list[str]:
    """Decode the warm-up clips in one batch and check each gives a transcript.

    Returns:
        list[str]: The transcripts (their content is not judged: any text is fine).

    Raises:
        WarmupError: If a clip fails to decode or the output has no transcript.
    """
    clips = [speech_like(seconds, sample_rate) for seconds in WARMUP_SECONDS]
    outputs = session.forward_batch(clips, return_exceptions=True)
    texts = []
    for seconds, output in zip(WARMUP_SECONDS, outputs, strict=True):
        if isinstance(output, BaseException):
            raise WarmupError(
                f"decoding a {seconds:g} s clip raised {type(output).__name__}: {output}"
            ) from output
        try:
            texts.append(transcript_text(output))
        except TypeError as exc:
            raise WarmupError(f"the output for a {seconds:g} s clip: {exc}") from exc
    return texts
