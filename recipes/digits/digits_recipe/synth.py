"""Synthesise spoken digit strings with espeak-ng and sox.

Each set is planned up front from its seed (texts, voices, speeds, noise), so
the result does not depend on how many processes render it. A set directory
holds ``<uttid>.flac`` (16-bit, mono), ``transcripts.tsv`` (``uttid<TAB>text``)
and ``conditions.tsv`` (how each utterance was made).
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from digits_recipe.config import SetSpec

TRANSCRIPTS = "transcripts.tsv"
CONDITIONS = "conditions.tsv"
NOISE_KINDS = ("white", "pink")
PEAK_LEVEL = 0.5
TRIM_LEVEL = 0.01  # espeak-ng's leading/trailing silence: below 1% of the peak


@dataclass(frozen=True)
class Utterance:
    """Everything needed to render one utterance deterministically.

    Attributes:
        uttid: Utterance id (also the file stem).
        text: The spoken words, space separated.
        voice: espeak-ng voice, ``accent+variant``.
        speed_wpm: espeak-ng speed.
        pitch: espeak-ng pitch.
        speed_perturb: sox ``speed`` factor.
        noise: Noise colour, ``white`` or ``pink``.
        snr_db: Signal-to-noise ratio of the added noise.
        gain_db: Overall gain.
        pad_before_s: Extra leading silence.
        pad_after_s: Extra trailing silence.
        noise_seed: Seed of the noise samples.
    """

    uttid: str
    text: str
    voice: str
    speed_wpm: int
    pitch: int
    speed_perturb: float
    noise: str
    snr_db: float
    gain_db: float
    pad_before_s: float
    pad_after_s: float
    noise_seed: int


def plan_set(spec: SetSpec, words: Sequence[str], num_words: tuple[int, int]) -> list[Utterance]:
    """Draw every utterance of a set from its seed.

    Args:
        spec: The set to plan.
        words: The vocabulary.
        num_words: Inclusive range of words per utterance.

    Returns:
        list[Utterance]: ``spec.size`` utterances, ids ``<set>_<index>``.
    """
    rng = np.random.default_rng(spec.seed)
    utterances = []
    for index in range(spec.size):
        count = int(rng.integers(num_words[0], num_words[1] + 1))
        text = " ".join(str(w) for w in rng.choice(words, size=count))
        utterances.append(
            Utterance(
                uttid=f"{spec.name}_{index:05d}",
                text=text,
                voice=f"{rng.choice(spec.accents)}+{rng.choice(spec.variants)}",
                speed_wpm=int(rng.integers(spec.speed_wpm[0], spec.speed_wpm[1] + 1)),
                pitch=int(rng.integers(spec.pitch[0], spec.pitch[1] + 1)),
                speed_perturb=float(rng.choice(spec.speed_perturb)),
                noise=str(rng.choice(NOISE_KINDS)),
                snr_db=round(float(rng.uniform(*spec.snr_db)), 2),
                gain_db=round(float(rng.uniform(*spec.gain_db)), 2),
                pad_before_s=round(float(rng.uniform(*spec.pad_s)), 3),
                pad_after_s=round(float(rng.uniform(*spec.pad_s)), 3),
                noise_seed=int(rng.integers(2**31)),
            )
        )
    return utterances


def _speak(utt: Utterance, sample_rate: int) -> np.ndarray:
    """Run espeak-ng and sox: the clean speech as float32 at ``sample_rate``."""
    wav = subprocess.run(
        [
            *("espeak-ng", "-v", utt.voice, "-s", str(utt.speed_wpm), "-p", str(utt.pitch)),
            *("--stdout", utt.text),
        ],
        capture_output=True,
        check=True,
    ).stdout
    raw = subprocess.run(
        [
            *("sox", "-t", "wav", "-"),
            *("-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(sample_rate)),
            *("-", "speed", str(utt.speed_perturb)),
        ],
        input=wav,
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.float32)


def _noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance white or pink (1/f power) noise."""
    white = rng.standard_normal(length)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1.0))
    pink = np.fft.irfft(spectrum, n=length)
    return pink / (pink.std() + 1e-12)


def _trim(speech: np.ndarray) -> np.ndarray:
    """Cut the leading and trailing silence (samples below ``TRIM_LEVEL`` of the peak)."""
    loud = np.flatnonzero(np.abs(speech) > TRIM_LEVEL * np.abs(speech).max())
    return speech[loud[0] : loud[-1] + 1] if loud.size else speech


def render(utt: Utterance, sample_rate: int) -> np.ndarray:
    """Render one utterance: trimmed speech, padding, gain and noise.

    Args:
        utt: The planned utterance.
        sample_rate: Output sample rate.

    Returns:
        np.ndarray: float32 samples in [-1, 1].
    """
    speech = _trim(_speak(utt, sample_rate).astype(np.float64))
    speech *= PEAK_LEVEL / (np.abs(speech).max() + 1e-12)
    before = np.zeros(round(utt.pad_before_s * sample_rate))
    after = np.zeros(round(utt.pad_after_s * sample_rate))
    signal = np.concatenate([before, speech, after])
    noise_rms = np.sqrt(np.mean(speech**2)) / 10 ** (utt.snr_db / 20)
    rng = np.random.default_rng(utt.noise_seed)
    signal += noise_rms * _noise(utt.noise, signal.size, rng)
    signal *= 10 ** (utt.gain_db / 20)
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


def write_tsv(path: Path, rows: Sequence[Sequence[object]]) -> None:
    """Write tab-separated rows."""
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)


def synthesise_set(
    utterances: Sequence[Utterance], out_dir: Path, *, sample_rate: int, jobs: int = 1
) -> Path:
    """Render a planned set into ``out_dir`` (replaced if it exists).

    Args:
        utterances: The planned utterances.
        out_dir: Set directory to write.
        sample_rate: Output sample rate.
        jobs: Parallel espeak-ng/sox pipelines.

    Returns:
        Path: ``out_dir``.

    Raises:
        FileNotFoundError: If espeak-ng or sox is not installed.
    """
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} not found: apt-get install espeak-ng sox")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    def write(utt: Utterance) -> None:
        audio = render(utt, sample_rate)
        sf.write(out_dir / f"{utt.uttid}.flac", audio, sample_rate, subtype="PCM_16")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(write, utterances))
    write_tsv(out_dir / TRANSCRIPTS, [(u.uttid, u.text) for u in utterances])
    fields = [f.name for f in dataclasses.fields(Utterance)]
    write_tsv(
        out_dir / CONDITIONS,
        [fields, *([getattr(u, name) for name in fields] for u in utterances)],
    )
    return out_dir
