"""Build the real-speech dev set: human recordings of digits from Debian packages.

Fetched at recipe time with ``apt-get download`` (never at serve time) and
unpacked with ``dpkg-deb -x``; nothing is installed. Sources:

- ``asterisk-core-sounds-en-wav``: the Asterisk PBX prompts recorded by
  Allison Smith (1 speaker, US English, 8 kHz telephone prompts), licence
  CC-BY-SA-3.0. Her single-digit prompts ``digits/{0..9,oh}.wav`` are used
  alone and joined, with short pauses, into digit strings, the way an IVR
  speaks a number.
- ``asterisk-core-sounds-en-g722`` (``--wideband``): the same recordings as
  G.722 (16 kHz wideband), decoded with ``ffmpeg``; same texts and pauses.
- ``saytime`` (``--prompts saytime``): the talking clock's recordings of
  ``0`` … ``9`` and ``oh`` by David C Dawson (1 speaker, male, 8 kHz μ-law
  without a header), licence GPL (the package's copyright file names no
  version); joined into the same texts with the same pauses.
- ``pocketsphinx-testdata``: CMU Sphinx test recordings (BSD-2), of which
  ``cards/004.wav`` is a person saying "five five" and ``tidigits/dhd.2934z.raw``
  (a TIDIGITS utterance that CMU ships as test data, 16 kHz raw PCM) another
  saying "two nine three four zero" (2 speakers).

The set is written like the synthesised ones (``<uttid>.flac`` at 16 kHz,
``transcripts.tsv``) plus ``SOURCES.txt`` naming each clip's origin and licence,
so ``espnet-serve eval --heldout-dir DIR`` scores it.

Usage (from ``recipes/digits``)::

    ../../.venv/bin/python -m digits_recipe.realdev work/data/real_dev
    ../../.venv/bin/python -m digits_recipe.realdev --wideband work/data/real_dev_wideband
    ../../.venv/bin/python -m digits_recipe.realdev --prompts saytime work/data/real_dev_saytime
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from digits_recipe.registry import fetch_package
from digits_recipe.synth import TRANSCRIPTS, write_tsv

SAMPLE_RATE = 16000
SEED = 4404
NUM_STRINGS = 49  # joined digit strings, beside the 11 single words: 60 clips
STRING_WORDS = (2, 5)  # inclusive range of words per joined string
PAUSE_S = (0.05, 0.25)  # pause between joined words, uniform
EDGE_S = 0.2  # silence before and after each clip
TRIM_LEVEL = 0.02  # prompt silence: below 2% of the peak

ASTERISK_DIGITS = "usr/share/asterisk/sounds/en_US_f_Allison/digits"
SAYTIME_DIGITS = "usr/share/saytime"
ULAW_RATE = 8000  # saytime's .au files: headerless 8 kHz μ-law
RAW_RATE = 16000  # pocketsphinx's .raw files: headerless 16 kHz 16-bit little-endian PCM
AU_MAGIC = b".snd"  # the header a Sun .au file starts with
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_STEMS = {**{word: str(n) for n, word in enumerate(DIGIT_WORDS)}, "oh": "oh"}
FFMPEG = "ffmpeg"
POCKETSPHINX_PACKAGE = "pocketsphinx-testdata"
POCKETSPHINX_CLIPS = {
    "cards/004.wav": "five five",
    "tidigits/dhd.2934z.raw": "two nine three four zero",
}
POCKETSPHINX_DATA = "usr/share/pocketsphinx/test/data"


@dataclass(frozen=True)
class Source:
    """Where a clip's speech comes from (for ``SOURCES.txt``)."""

    package: str
    speaker: str
    licence: str


@dataclass(frozen=True)
class Prompts:
    """One speaker's recordings of the single digits, in one encoding."""

    source: Source
    suffix: str  # ``.wav`` (PCM), ``.g722`` (16 kHz G.722) or ``.au`` (8 kHz μ-law)
    directory: str = ASTERISK_DIGITS  # where the package keeps them
    prefix: str = "asterisk"  # utterance ids: ``<prefix>_<index>``


ASTERISK_8K = Prompts(
    Source("asterisk-core-sounds-en-wav", "Allison Smith", "CC-BY-SA-3.0"), ".wav"
)
ASTERISK_WIDEBAND = Prompts(
    Source("asterisk-core-sounds-en-g722", "Allison Smith", "CC-BY-SA-3.0"), ".g722"
)
SAYTIME = Prompts(
    Source("saytime", "David C Dawson", "GPL (no version stated)"),
    ".au",
    SAYTIME_DIGITS,
    "saytime",
)
PROMPTS = {"asterisk": ASTERISK_8K, "asterisk-g722": ASTERISK_WIDEBAND, "saytime": SAYTIME}
POCKETSPHINX = Source(POCKETSPHINX_PACKAGE, "CMU Sphinx test speakers", "BSD-2-Clause")


def _trim(audio: np.ndarray) -> np.ndarray:
    """Cut leading and trailing samples below ``TRIM_LEVEL`` of the peak."""
    loud = np.flatnonzero(np.abs(audio) > TRIM_LEVEL * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def read_clip(path: Path, *, raw_rate: int = RAW_RATE, trim: bool = True) -> np.ndarray:
    """Read a clip as float64 mono at ``SAMPLE_RATE``, silence trimmed.

    G.722 files are decoded with ffmpeg; ``.au`` files without a Sun header
    are read as 8 kHz μ-law and ``.raw`` files as 16-bit PCM at ``raw_rate``;
    anything else with soundfile.

    Args:
        path: The recording.
        raw_rate: Sample rate of a headerless ``.raw`` file.
        trim: Whether to cut the leading and trailing silence (below
            ``TRIM_LEVEL`` of the peak).
    """
    if path.suffix == ".au" and path.read_bytes()[:4] != AU_MAGIC:
        audio, rate = sf.read(
            str(path),
            samplerate=ULAW_RATE,
            channels=1,
            format="RAW",
            subtype="ULAW",
            dtype="float64",
            always_2d=True,
        )
    elif path.suffix == ".raw":
        audio, rate = sf.read(
            str(path),
            samplerate=raw_rate,
            channels=1,
            format="RAW",
            subtype="PCM_16",
            endian="LITTLE",
            dtype="float64",
            always_2d=True,
        )
    elif path.suffix == ".g722":
        wav = subprocess.run(
            [FFMPEG, "-loglevel", "error", "-f", "g722", "-i", str(path), "-f", "wav", "-"],
            capture_output=True,
            check=True,
        ).stdout
        audio, rate = sf.read(io.BytesIO(wav), dtype="float64", always_2d=True)
    else:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    resampled = soxr.resample(audio.mean(axis=1), rate, SAMPLE_RATE)
    return _trim(resampled) if trim else resampled


def plan_strings(words: Sequence[str], rng: np.random.Generator) -> list[list[str]]:
    """The words of each clip: every single word, then ``NUM_STRINGS`` random strings."""
    strings = [[word] for word in words]
    for _ in range(NUM_STRINGS):
        count = int(rng.integers(STRING_WORDS[0], STRING_WORDS[1] + 1))
        strings.append([str(w) for w in rng.choice(list(words), size=count)])
    return strings


def join(parts: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Concatenate word recordings with random short pauses and edge silence."""
    edge = np.zeros(round(EDGE_S * SAMPLE_RATE))
    pieces = [edge]
    for index, part in enumerate(parts):
        if index:
            pieces.append(np.zeros(round(rng.uniform(*PAUSE_S) * SAMPLE_RATE)))
        pieces.append(part)
    pieces.append(edge)
    return np.concatenate(pieces)


def build(out_dir: Path, scratch: Path, prompts: Prompts = ASTERISK_8K) -> Path:
    """Fetch the sources and write the dev set into ``out_dir``.

    Args:
        out_dir: The set directory to write (created; existing clips replaced).
        scratch: Where packages are downloaded and unpacked.
        prompts: Whose digit recordings to join, in which encoding (the texts
            and pauses are the same for each).

    Returns:
        Path: ``out_dir``.

    Raises:
        FileNotFoundError: If ``prompts`` is G.722 and ffmpeg is not installed.
    """
    if prompts.suffix == ".g722" and shutil.which(FFMPEG) is None:
        raise FileNotFoundError(
            "the wideband dev set decodes G.722 with ffmpeg: apt-get install ffmpeg"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    digits = fetch_package(prompts.source.package, scratch) / prompts.directory
    recordings = {
        word: read_clip(digits / f"{stem}{prompts.suffix}") for word, stem in DIGIT_STEMS.items()
    }
    rows: list[tuple[str, str]] = []
    sources: list[tuple[str, str, str, str, str]] = []
    source = prompts.source
    for index, words in enumerate(plan_strings(list(DIGIT_STEMS), rng)):
        uttid = f"{prompts.prefix}_{index:03d}"
        audio = join([recordings[w] for w in words], rng)
        write_clip(out_dir, uttid, audio)
        rows.append((uttid, " ".join(words)))
        sources.append((uttid, source.package, source.speaker, source.licence, "joined"))
    sphinx = fetch_package(POCKETSPHINX_PACKAGE, scratch) / POCKETSPHINX_DATA
    for index, (name, text) in enumerate(POCKETSPHINX_CLIPS.items()):
        uttid = f"pocketsphinx_{index:03d}"
        write_clip(out_dir, uttid, join([read_clip(sphinx / name)], rng))
        rows.append((uttid, text))
        sources.append(
            (uttid, POCKETSPHINX.package, POCKETSPHINX.speaker, POCKETSPHINX.licence, name)
        )
    write_tsv(out_dir / TRANSCRIPTS, rows)
    write_tsv(
        out_dir / "SOURCES.txt",
        [("uttid", "debian_package", "speaker", "licence", "clip"), *sources],
    )
    return out_dir


def write_clip(out_dir: Path, uttid: str, audio: np.ndarray) -> None:
    """Write one clip as 16-bit FLAC, peak-normalised to half scale."""
    audio = 0.5 * audio / (np.abs(audio).max() + 1e-12)
    sf.write(out_dir / f"{uttid}.flac", audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")


def build_dev_set(out_dir: Path, prompts: Prompts = ASTERISK_8K) -> Path:
    """Fetch the sources into a scratch directory and write the dev set into ``out_dir``."""
    with tempfile.TemporaryDirectory(prefix="digits-realdev-") as scratch:
        return build(out_dir, Path(scratch), prompts)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the dev set into the given directory; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="Set directory to write.")
    parser.add_argument(
        "--prompts", choices=sorted(PROMPTS), default="asterisk", help="Whose digit recordings."
    )
    parser.add_argument(
        "--wideband", action="store_true", help="Same as --prompts asterisk-g722 (needs ffmpeg)."
    )
    args = parser.parse_args(argv)
    build_dev_set(args.out_dir, ASTERISK_WIDEBAND if args.wideband else PROMPTS[args.prompts])
    return 0


if __name__ == "__main__":
    sys.exit(main())
