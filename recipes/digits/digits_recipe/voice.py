"""The default voice's data: one synthetic speaker's digit strings with their word durations.

Each vocabulary word is rendered once by one engine voice (flite's ``slt`` by default),
trimmed of its silence; an utterance strings 1-5 words with a pause after each. The
durations a FastSpeech model learns from are then exact, in feature frames: a word's
frames run from its start to the next word's (its pause included), the leading silence
goes to the first word and the trailing silence to ``<sos/eos>``, as espnet2's FastSpeech
reads them (one per token and one for the end).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from digits_recipe.data import token_list

TRIM_THRESHOLD = 0.01  # of full scale: where a word's rendering starts and ends
TRIM_MARGIN_S = 0.02  # kept around the speech


@dataclass(frozen=True)
class VoiceUtterance:
    """One training utterance of the voice.

    Attributes:
        uttid: Its id.
        words: The words spoken.
        pauses_s: The silence after each word (the last: the trailing silence).
        lead_s: The silence before the first word.
    """

    uttid: str
    words: tuple[str, ...]
    pauses_s: tuple[float, ...]
    lead_s: float


def render_words(words: Sequence[str], voice: str, out_dir: Path) -> dict[str, np.ndarray]:
    """Each word rendered once by flite's ``voice`` at 16 kHz, trimmed to its speech."""
    import subprocess

    out_dir.mkdir(parents=True, exist_ok=True)
    rendered: dict[str, np.ndarray] = {}
    for word in words:
        path = out_dir / f"{word}.wav"
        subprocess.run(["flite", "-voice", voice, "-t", word, "-o", str(path)], check=True)
        samples, rate = sf.read(path, dtype="float32")
        voiced = np.flatnonzero(np.abs(samples) > TRIM_THRESHOLD)
        margin = int(TRIM_MARGIN_S * rate)
        start, end = max(0, voiced[0] - margin), min(len(samples), voiced[-1] + margin)
        rendered[word] = samples[start:end]
    return rendered


def plan_voice_set(
    prefix: str, count: int, seed: int, words: Sequence[str], spec: Mapping[str, Any]
) -> list[VoiceUtterance]:
    """``count`` utterances of 1-5 words with their pauses, all drawn from ``seed``."""
    rng = random.Random(seed)
    low, high = spec["num_words"]
    utterances = []
    for index in range(count):
        chosen = tuple(rng.choice(list(words)) for _ in range(rng.randint(low, high)))
        pauses = (
            *(rng.uniform(*spec["pause_s"]) for _ in chosen[:-1]),
            rng.uniform(*spec["pad_s"]),
        )
        utterances.append(
            VoiceUtterance(f"{prefix}_{index:05d}", chosen, pauses, rng.uniform(*spec["pad_s"]))
        )
    return utterances


def frames(samples: int, hop: int) -> int:
    """Feature frames of ``samples`` samples (a centred STFT: one more than whole hops)."""
    return samples // hop + 1


def write_voice_set(
    utterances: Sequence[VoiceUtterance],
    rendered: Mapping[str, np.ndarray],
    rate: int,
    hop: int,
    audio_dir: Path,
    data_dir: Path,
) -> Path:
    """Write the clips and the espnet2 data directory of a voice set.

    ``wav.scp``, ``text``, ``durations`` (frames per word and for ``<sos/eos>``) and the
    shape files.

    Returns:
        Path: ``data_dir``.
    """
    audio_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {
        name: [] for name in ("wav.scp", "text", "durations", "speech_shape", "text_shape")
    }
    for utt in utterances:
        pieces = [np.zeros(int(utt.lead_s * rate), np.float32)]
        bounds = [0]  # sample where each token's frames end
        for word, pause in zip(utt.words, utt.pauses_s, strict=True):
            pieces += [rendered[word], np.zeros(int(pause * rate), np.float32)]
            bounds.append(sum(len(p) for p in pieces))
        samples = np.concatenate(pieces)
        # The last word ends where its speech does; its trailing silence is <sos/eos>'s.
        bounds[-1] -= int(utt.pauses_s[-1] * rate)
        total = frames(len(samples), hop)
        edges = [*(round(b / hop) for b in bounds), total]
        durations = [b - a for a, b in itertools.pairwise(edges)]
        path = (audio_dir / f"{utt.uttid}.flac").absolute()
        sf.write(path, samples, rate)
        lines["wav.scp"].append(f"{utt.uttid} {path}")
        lines["text"].append(f"{utt.uttid} {' '.join(utt.words)}")
        lines["durations"].append(f"{utt.uttid} {' '.join(map(str, durations))}")
        lines["speech_shape"].append(f"{utt.uttid} {len(samples)}")
        lines["text_shape"].append(f"{utt.uttid} {len(utt.words)}")
    for name, content in lines.items():
        (data_dir / name).write_text("".join(f"{line}\n" for line in content), encoding="utf-8")
    return data_dir


def voice_token_list(words: Sequence[str]) -> list[str]:
    """The voice's tokens: the ASR model's word list (``<blank>`` first, ``<sos/eos>`` last)."""
    return token_list(words)
