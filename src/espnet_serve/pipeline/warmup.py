"""Warm-up before reporting ready: speech-like clips decoded (or enhanced), or a sentence spoken."""

from __future__ import annotations

import numpy as np

from espnet_serve.audio.segmenter import AudioSegment
from espnet_serve.executors.enh import EnhExecutor
from espnet_serve.executors.tts import SynthesisInputError, TtsExecutor
from espnet_serve.pipeline.decode import SegmentDecodeError, SegmentDecoder

WARMUP_SECONDS = (1.5, 0.8)
WARMUP_SENTENCE = "Hello, this is a test of one two three."
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


def warm_up_synthesis(synthesizer: TtsExecutor) -> int:
    """Speak :data:`WARMUP_SENTENCE` in the default voice and check audio came out.

    A model with a small word vocabulary (the digits voice) says its own first words
    instead.

    Returns:
        int: How many samples it gave.

    Raises:
        WarmupError: If the synthesis failed or gave no samples.
    """
    sentence = " ".join(synthesizer.words()[:3]) or WARMUP_SENTENCE
    try:
        samples = synthesizer.synthesize(sentence)
    except (SynthesisInputError, RuntimeError, ValueError, LookupError) as exc:
        raise WarmupError(f"speaking {sentence!r}: {exc}") from exc
    if not samples.size or not np.isfinite(samples).all():
        raise WarmupError(f"speaking {sentence!r} gave no finite samples")
    return int(samples.size)


def warm_up_enhancement(enhancer: EnhExecutor, sample_rate: int) -> int:
    """Enhance a speech-like clip and check every track came out whole and finite.

    Returns:
        int: How many tracks it gave.

    Raises:
        WarmupError: If the enhancement failed or a track is short or not finite.
    """
    clip = speech_like(WARMUP_SECONDS[0], sample_rate)
    try:
        tracks = enhancer.enhance(clip, sample_rate)
    except Exception as exc:
        raise WarmupError(f"enhancing a {WARMUP_SECONDS[0]:g} s clip: {exc}") from exc
    if len(tracks) != enhancer.tracks or any(
        len(t) != len(clip) or not np.isfinite(t).all() for t in tracks
    ):
        raise WarmupError("enhancing a speech-like clip gave short or non-finite tracks")
    return len(tracks)
