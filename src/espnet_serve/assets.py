"""Package data: the embedded default models and the ASR model's held-out evaluation set.

All are made by ``recipes/digits`` (synthetic spoken digit strings): the
packed ASR bundle ``assets/digits_asr.tar.gz``, its streaming variant
``assets/digits_asr_streaming.tar.gz`` (a contextual-block conformer), the default voice
``assets/digits_voice.tar.gz`` (a FastSpeech model), and ``assets/heldout/`` with
``<uttid>.flac`` clips (16 kHz, mono) and ``transcripts.tsv``
(``uttid<TAB>text``), synthesised with voices unseen in training.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from espnet_serve.audio.ingest import IngestLimits, read_audio_file

ASSETS_DIR = Path(__file__).absolute().parent / "assets"
DEFAULT_MODEL_ARCHIVE: Path = ASSETS_DIR / "digits_asr.tar.gz"
DEFAULT_VOICE_ARCHIVE: Path = ASSETS_DIR / "digits_voice.tar.gz"
DEFAULT_STREAMING_ARCHIVE: Path = ASSETS_DIR / "digits_asr_streaming.tar.gz"
HELDOUT_DIR: Path = ASSETS_DIR / "heldout"
TRANSCRIPTS_FILENAME = "transcripts.tsv"
AUDIO_SUFFIX = ".flac"


@dataclass(frozen=True)
class HeldoutClip:
    """One held-out utterance.

    Attributes:
        uttid: Utterance id (the audio file's stem).
        path: The audio file.
        text: Reference transcript (lower-case words, single spaces).
    """

    uttid: str
    path: Path
    text: str

    def read_audio(self, target_rate: int, limits: IngestLimits | None = None) -> np.ndarray:
        """Read the clip through :mod:`espnet_serve.audio.ingest`.

        Args:
            target_rate: Sample rate the model expects.
            limits: What to accept (default: :class:`IngestLimits` defaults).

        Returns:
            np.ndarray: Mono float32 samples at ``target_rate``.

        Raises:
            AudioInputError: If the clip is not acceptable audio.
        """
        return read_audio_file(self.path, target_rate=target_rate, limits=limits)


def load_heldout(limit: int | None = None, *, directory: Path = HELDOUT_DIR) -> list[HeldoutClip]:
    """List the held-out clips in ``transcripts.tsv`` order.

    Args:
        limit: Return at most this many clips (the first ones).
        directory: A held-out set directory (default: the packaged one).

    Returns:
        list[HeldoutClip]: The clips.

    Raises:
        FileNotFoundError: If the transcripts file or a listed clip is missing.
    """
    with (directory / TRANSCRIPTS_FILENAME).open(encoding="utf-8", newline="") as f:
        rows = [row for row in csv.reader(f, delimiter="\t") if row]
    clips = [
        HeldoutClip(uttid=uttid, path=directory / f"{uttid}{AUDIO_SUFFIX}", text=text)
        for uttid, text in rows[:limit]
    ]
    for clip in clips:
        if not clip.path.is_file():
            raise FileNotFoundError(f"Held-out clip {clip.uttid} not found: {clip.path}")
    return clips
