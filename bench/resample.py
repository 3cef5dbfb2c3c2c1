"""Resampler comparison for audio ingest: soxr (streaming) against scipy's resample_poly.

Quality: each resampler turns an analytically generated band-limited signal at
the source rate into the target rate; the reference is the same formula
evaluated at the target rate, so the error is the resampler's alone. Signals:
a 12-tone mix (random phases) and a linear sine sweep, both up to 90 % of the
lower Nyquist frequency. SNR is measured away from the edges (0.25 s each
side). Downsampling also reports alias rejection: the output level of a tone
between the target and source Nyquist frequencies (lower is better).

Speed: wall time per second of audio on 30 s of noise (best of 5): soxr as
ingest runs it (1 s blocks through ``soxr.ResampleStream``) and one-shot;
resample_poly one-shot on the exact integer ratio (``gcd``), which for an
odd source rate (44101 Hz) means a filter thousands of taps long.

Writes ``bench/results/resample.json``.

Example:
    .venv/bin/python bench/resample.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from math import gcd
from pathlib import Path

import numpy as np
import scipy
import soxr
from scipy.signal import resample_poly

TARGET_RATE = 16000
QUALITY_RATES = (8000, 22050, 44100, 48000)
SPEED_RATES = (8000, 22050, 44100, 48000, 44101)
SIGNAL_SECONDS = 4.0
EDGE_SECONDS = 0.25
SPEED_SECONDS = 30.0
SPEED_REPEATS = 5
RESULTS = Path(__file__).absolute().parent / "results" / "resample.json"

Resampler = Callable[[np.ndarray, int, int], np.ndarray]


def soxr_stream(quality: str) -> Resampler:
    """soxr as ``espnet_serve.audio.ingest`` runs it: 1 s blocks through a ResampleStream."""

    def run(x: np.ndarray, source: int, target: int) -> np.ndarray:
        stream = soxr.ResampleStream(source, target, 1, dtype="float32", quality=quality)
        pieces = [stream.resample_chunk(x[i : i + source]) for i in range(0, len(x), source)]
        pieces.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
        return np.concatenate(pieces)

    return run


def soxr_oneshot(quality: str) -> Resampler:
    """soxr on the whole signal at once."""
    return lambda x, source, target: soxr.resample(x, source, target, quality=quality)


def poly(x: np.ndarray, source: int, target: int) -> np.ndarray:
    """scipy's polyphase resampler on the exact ratio (what serving/audio.py used)."""
    divisor = gcd(source, target)
    return resample_poly(x, target // divisor, source // divisor).astype(np.float32)


RESAMPLERS: dict[str, Resampler] = {
    "soxr-HQ stream": soxr_stream("HQ"),
    "soxr-VHQ stream": soxr_stream("VHQ"),
    "soxr-HQ one-shot": soxr_oneshot("HQ"),
    "scipy resample_poly": poly,
}
QUALITY_RESAMPLERS = ("soxr-HQ stream", "soxr-VHQ stream", "scipy resample_poly")


def multitone(rate: int, top: float) -> np.ndarray:
    """12 equal tones from 100 Hz to ``top`` Hz with fixed random phases, at ``rate``."""
    t = np.arange(int(SIGNAL_SECONDS * rate)) / rate
    freqs = np.linspace(100.0, top, 12)
    phases = np.random.default_rng(0).uniform(0, 2 * np.pi, len(freqs))
    tones = np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(axis=0)
    return (0.5 * tones / len(freqs)).astype(np.float32)


def sweep(rate: int, top: float) -> np.ndarray:
    """A linear sine sweep from 50 Hz to ``top`` Hz over the signal, at ``rate``."""
    t = np.arange(int(SIGNAL_SECONDS * rate)) / rate
    slope = (top - 50.0) / SIGNAL_SECONDS
    return (0.5 * np.sin(2 * np.pi * (50.0 * t + 0.5 * slope * t**2))).astype(np.float32)


def snr_db(output: np.ndarray, reference: np.ndarray, rate: int) -> float:
    """SNR of ``output`` against ``reference``, edges excluded."""
    edge = int(EDGE_SECONDS * rate)
    n = min(len(output), len(reference))
    ref, err = reference[edge : n - edge], output[edge : n - edge] - reference[edge : n - edge]
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum(err**2.0)))


def alias_level_db(resampler: Resampler, source: int) -> float:
    """Output level (dB re. input) of a tone midway between target and source Nyquist."""
    freq = (TARGET_RATE / 2 + source / 2) / 2
    t = np.arange(int(SIGNAL_SECONDS * source)) / source
    tone = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    out = resampler(tone, source, TARGET_RATE)
    edge = int(EDGE_SECONDS * TARGET_RATE)
    rms_out = np.sqrt(np.mean(out[edge:-edge].astype(np.float64) ** 2))
    return float(20 * np.log10(max(rms_out, 1e-12) / (0.5 / np.sqrt(2))))


def quality() -> list[dict]:
    """SNR (and alias rejection) of each resampler for each source rate."""
    rows = []
    for source in QUALITY_RATES:
        top = 0.9 * min(source, TARGET_RATE) / 2
        for name in QUALITY_RESAMPLERS:
            resampler = RESAMPLERS[name]
            row: dict = {"source_rate": source, "resampler": name}
            for signal_name, signal in (("multitone", multitone), ("sweep", sweep)):
                out = resampler(signal(source, top), source, TARGET_RATE)
                snr = snr_db(out, signal(TARGET_RATE, top), TARGET_RATE)
                row[f"{signal_name}_snr_db"] = round(snr, 1)
            if source > TARGET_RATE:
                row["alias_level_db"] = round(alias_level_db(resampler, source), 1)
            rows.append(row)
    return rows


def speed() -> list[dict]:
    """Milliseconds per audio-second of each resampler for each source rate."""
    rows = []
    for source in SPEED_RATES:
        x = (np.random.default_rng(1).standard_normal(int(SPEED_SECONDS * source)) * 0.1).astype(
            np.float32
        )
        for name, resampler in RESAMPLERS.items():
            times = []
            for _ in range(SPEED_REPEATS):
                start = time.perf_counter()
                resampler(x, source, TARGET_RATE)
                times.append(time.perf_counter() - start)
            rows.append(
                {
                    "source_rate": source,
                    "resampler": name,
                    "ms_per_audio_second": round(1000 * min(times) / SPEED_SECONDS, 3),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = {
        "target_rate": TARGET_RATE,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {"soxr": soxr.__version__, "scipy": scipy.__version__, "numpy": np.__version__},
        "quality": quality(),
        "speed": speed(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for row in report["quality"]:
        print(row)
    for row in report["speed"]:
        print(row)


if __name__ == "__main__":
    main()
