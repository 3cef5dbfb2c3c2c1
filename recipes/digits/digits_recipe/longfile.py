"""Long recordings with exact truth: digit strings with pauses, and when each word is spoken.

Test and benchmark data for long-form transcription. Each digit string is a
held-out-style utterance (voices unseen in training); its words are rendered
with espeak-ng's library, spoken as one phrase like the training clips, and its
word events say where each word starts (:mod:`digits_recipe.espeak_words`); a
word ends at its last loud sample before the next word. Strings
are separated by pauses, and each string with its following pause carries its
own noise. The file is written string by string, so an hour of audio never sits
in memory.

Run ``python -m digits_recipe.longfile OUT.flac --minutes 10`` (from
``recipes/digits``); ``OUT.words.tsv`` and ``OUT.strings.tsv`` hold the truth.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from digits_recipe.config import SetSpec, load_config
from digits_recipe.espeak_words import EspeakWords
from digits_recipe.synth import PEAK_LEVEL, TRIM_LEVEL, Utterance, _noise, plan_set

WORDS_SUFFIX = ".words.tsv"
STRINGS_SUFFIX = ".strings.tsv"
LONG_FILE_SEED = 4404
PAUSE_S = (0.6, 1.8)  # silence before each string (and after the last)
SECONDS_PER_STRING = 1.5  # a low estimate, so that enough strings are planned


@dataclass(frozen=True)
class TimedWord:
    """One spoken word and where it is in the file (seconds)."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class TimedString:
    """One digit string, its words, and where it is in the file (seconds)."""

    text: str
    start: float
    end: float
    words: tuple[TimedWord, ...]


def _word_spans(speech: np.ndarray, starts: Sequence[int]) -> list[tuple[int, int]]:
    """Each word's loud part: from its first to its last sample above ``TRIM_LEVEL`` of the peak.

    A word runs from its espeak-ng word event to the next word's; silence at
    either end of that stretch is not part of the word.
    """
    loud = np.abs(speech) > TRIM_LEVEL * np.abs(speech).max()
    bounds = [*starts[1:], len(speech)]
    spans = []
    for first, stop in zip(starts, bounds, strict=True):
        hits = np.flatnonzero(loud[first:stop])
        spans.append(
            (first + int(hits[0]), first + int(hits[-1]) + 1) if hits.size else (first, stop)
        )
    return spans


def _render_string(
    utt: Utterance, sample_rate: int, espeak: EspeakWords, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[str, int, int]], int]:
    """Speech of one string, spoken as one phrase: samples, word spans, the pause before it."""
    raw, starts = espeak.speak(utt.text, voice=utt.voice, speed_wpm=utt.speed_wpm, pitch=utt.pitch)
    ratio = sample_rate / espeak.sample_rate
    speech = soxr.resample(raw.astype(np.float64) / 32768, espeak.sample_rate, sample_rate, "HQ")
    words = utt.text.split()
    if len(starts) != len(words):
        raise ValueError(f"espeak-ng reported {len(starts)} words for {utt.text!r}")
    spans = _word_spans(speech, [min(round(s * ratio), len(speech) - 1) for s in starts])
    first, last = spans[0][0], spans[-1][1]
    timed = [(w, a - first, b - first) for w, (a, b) in zip(words, spans, strict=True)]
    return speech[first:last], timed, round(rng.uniform(*PAUSE_S) * sample_rate)


def _finish(utt: Utterance, speech: np.ndarray, pause: int, tail: int) -> np.ndarray:
    """Level, pauses, noise and gain of one string, as ``synth.render`` does for a clip."""
    speech = speech * (PEAK_LEVEL / (np.abs(speech).max() + 1e-12))
    voiced = speech[np.abs(speech) > 0]
    signal = np.concatenate([np.zeros(pause), speech, np.zeros(tail)])
    noise_rms = np.sqrt(np.mean(voiced**2)) / 10 ** (utt.snr_db / 20)
    signal += noise_rms * _noise(utt.noise, signal.size, np.random.default_rng(utt.noise_seed))
    signal *= 10 ** (utt.gain_db / 20)
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


def plan_strings(
    spec: SetSpec, words: Sequence[str], minutes: float, seed: int = LONG_FILE_SEED
) -> list[Utterance]:
    """Enough held-out-style strings for ``minutes`` of audio, drawn from ``seed``."""
    count = int(minutes * 60 / SECONDS_PER_STRING) + 8
    planned = dataclasses.replace(spec, name="long", seed=seed, size=count, pad_s=(0, 0))
    return plan_set(planned, words, (1, 5))


def write_long_file(
    out: Path,
    *,
    minutes: float,
    seed: int = LONG_FILE_SEED,
    config: dict | None = None,
    jobs: int = 2,
) -> list[TimedString]:
    """Write ``out`` (FLAC, 16-bit) of about ``minutes`` and its truth TSVs beside it.

    Args:
        out: The audio file to write.
        minutes: Length to reach (the last string may run over).
        seed: Seed of the strings' texts, voices and noise.
        config: Recipe config (default: ``conf/recipe.yaml``).
        jobs: Rendering processes.

    Returns:
        list[TimedString]: The truth, also written to ``<out>.words.tsv``
        (``word start end``) and ``<out>.strings.tsv`` (``start end text``).
    """
    config = config or load_config()
    sample_rate = int(config["synthesis"]["sample_rate"])
    spec = SetSpec.from_config(config, "heldout")
    planned = plan_strings(spec, config["synthesis"]["words"], minutes, seed)
    target = round(minutes * 60 * sample_rate)
    truth: list[TimedString] = []
    position = 0
    with sf.SoundFile(out, "w", sample_rate, 1, subtype="PCM_16", format="FLAC") as sound:
        for utt, (speech, spans, pause) in zip(
            planned, _rendered(planned, sample_rate, jobs), strict=False
        ):
            last = position + pause + len(speech) >= target
            tail = pause if last else 0
            sound.write(_finish(utt, speech, pause, tail))
            position += pause
            words = tuple(
                TimedWord(w, (position + a) / sample_rate, (position + b) / sample_rate)
                for w, a, b in spans
            )
            truth.append(TimedString(utt.text, words[0].start, words[-1].end, words))
            position += len(speech) + tail
            if last:
                break
    _write_truth(out, truth)
    return truth


def _render_fresh(utt: Utterance, sample_rate: int) -> tuple[np.ndarray, list, int]:
    """Render one string in this (fresh) process.

    The espeak-ng library keeps state from one synthesis to the next, so each
    string gets a new process, as the command line gives each held-out clip.
    """
    return _render_string(
        utt, sample_rate, EspeakWords(), np.random.default_rng(utt.noise_seed + 1)
    )


def _rendered(
    planned: Sequence[Utterance], sample_rate: int, jobs: int
) -> Iterator[tuple[np.ndarray, list[tuple[str, int, int]], int]]:
    """Render strings in order, ``jobs`` processes at a time, lazily."""
    context = multiprocessing.get_context("fork")
    with context.Pool(max(1, jobs), maxtasksperchild=1) as pool:
        yield from pool.imap(functools.partial(_render_fresh, sample_rate=sample_rate), planned)


def _write_truth(out: Path, truth: Sequence[TimedString]) -> None:
    """Write ``<out>.words.tsv`` and ``<out>.strings.tsv``."""
    with _tsv(out, WORDS_SUFFIX) as writer:
        for string in truth:
            writer.writerows((w.word, f"{w.start:.4f}", f"{w.end:.4f}") for w in string.words)
    with _tsv(out, STRINGS_SUFFIX) as writer:
        writer.writerows((f"{s.start:.4f}", f"{s.end:.4f}", s.text) for s in truth)


@contextlib.contextmanager
def _tsv(out: Path, suffix: str) -> Iterator[Any]:
    """A tab-separated ``csv`` writer on ``<out stem><suffix>``."""
    path = out.with_name(out.name.removesuffix(out.suffix) + suffix)
    with path.open("w", encoding="utf-8", newline="") as file:
        yield csv.writer(file, delimiter="\t", lineterminator="\n")


def read_truth(audio: Path) -> list[TimedString]:
    """Read the truth written beside ``audio`` by :func:`write_long_file`."""
    stem = audio.with_name(audio.name.removesuffix(audio.suffix))
    rows = [r.split("\t") for r in Path(f"{stem}{WORDS_SUFFIX}").read_text().splitlines()]
    words = iter(TimedWord(w, float(a), float(b)) for w, a, b in rows)
    truth = []
    for line in Path(f"{stem}{STRINGS_SUFFIX}").read_text().splitlines():
        start, end, text = line.split("\t")
        timed = tuple(next(words) for _ in text.split())
        truth.append(TimedString(text, float(start), float(end), timed))
    return truth


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a long file and its truth."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="FLAC file to write")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=LONG_FILE_SEED)
    parser.add_argument("--jobs", type=int, default=2, help="rendering processes")
    args = parser.parse_args(argv)
    truth = write_long_file(args.out, minutes=args.minutes, seed=args.seed, jobs=args.jobs)
    print(f"{args.out}: {len(truth)} strings, {truth[-1].end:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
