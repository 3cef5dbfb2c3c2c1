"""Turn synthesised sets into espnet2 data directories and a word token list.

An espnet2 data directory holds ``wav.scp`` and ``text`` (``uttid value``
lines) plus the shape files its batch sampler reads: ``speech_shape``
(samples) and ``text_shape`` (words: the model's tokens are the vocabulary's
words, espnet2's ``token_type: word``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import soundfile as sf

from digits_recipe.synth import TRANSCRIPTS

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"


def read_transcripts(set_dir: Path) -> list[tuple[str, str]]:
    """Read ``transcripts.tsv`` of a set directory as ``(uttid, text)`` pairs."""
    with (set_dir / TRANSCRIPTS).open(encoding="utf-8", newline="") as f:
        return [(row[0], row[1]) for row in csv.reader(f, delimiter="\t")]


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write one line per item."""
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def prepare_data_dir(set_dirs: Sequence[Path], data_dir: Path) -> Path:
    """Write the espnet2 data directory of one or more synthesised sets (concatenated).

    Args:
        set_dirs: Directories written by :func:`digits_recipe.synth.synthesise_set`.
        data_dir: The data directory to write.

    Returns:
        Path: ``data_dir``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    items = [(set_dir, *item) for set_dir in set_dirs for item in read_transcripts(set_dir)]
    audio = {uttid: (set_dir / f"{uttid}.flac").absolute() for set_dir, uttid, _ in items}
    _write_lines(data_dir / "wav.scp", (f"{uttid} {audio[uttid]}" for _, uttid, _ in items))
    _write_lines(data_dir / "text", (f"{uttid} {text}" for _, uttid, text in items))
    _write_lines(
        data_dir / "speech_shape",
        (f"{uttid} {sf.info(str(audio[uttid])).frames}" for _, uttid, _ in items),
    )
    _write_lines(
        data_dir / "text_shape", (f"{uttid} {len(text.split())}" for _, uttid, text in items)
    )
    return data_dir


def token_list(words: Iterable[str]) -> list[str]:
    """The espnet2 word token list of a vocabulary.

    Args:
        words: The vocabulary (``zero`` ... ``nine``, ``oh``).

    Returns:
        list[str]: ``<blank>``, ``<unk>``, the words (sorted), ``<sos/eos>``.
    """
    return [BLANK, UNK, *sorted(set(words)), SOS_EOS]
