"""Text-to-speech engines of the recipe: each turns utterances into WAV bytes.

espeak-ng, flite and festival are Debian packages that synthesise offline
(``make sysdeps``); Kokoro is a neural model run in-process
(:mod:`digits_recipe.kokoro`, fetched at recipe time):

- ``espeak-ng``: formant synthesis; voice ``accent+variant``, speed in words
  per minute and pitch from the utterance.
- ``flite``: CMU Flite's built-in voices (``kal``, ``kal16``, ``awb``, ``rms``,
  ``slt``; diphone and cluster-unit voices of real speakers); the
  utterance's ``stretch`` sets ``duration_stretch``.
- ``festival``: Festival voices by name (``kal_diphone``, ``ked_diphone``,
  ``cmu_us_slt_arctic_hts``; packages ``festvox-kallpc16k``,
  ``festvox-kdlpc16k``, ``festvox-us-slt-hts``); ``stretch`` sets
  ``Duration_Stretch``. One festival process renders a whole chunk.
- ``kokoro``: Kokoro-82M's English voices (``af_bella``, ``bm_george``, ...);
  the utterance's ``stretch`` divides its speed.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import soundfile as sf

from digits_recipe.kokoro import SAMPLE_RATE as KOKORO_RATE
from digits_recipe.kokoro import Kokoro

if TYPE_CHECKING:
    from digits_recipe.synth import Utterance

ESPEAK_NG = "espeak-ng"
FLITE = "flite"
FESTIVAL = "festival"
KOKORO = "kokoro"
PROGRAMS = (ESPEAK_NG, FLITE, FESTIVAL)  # engines that are programs on the PATH
ENGINES = (*PROGRAMS, KOKORO)
SOX = "sox"
# sox in repeatable mode: dither (added when it writes 8-bit or 16-bit codecs) seeded with a
# fixed number instead of the clock, so a clip renders the same on every run
SOX_COMMAND = (SOX, "-R")


def required_tools(utterances: Iterable[Utterance]) -> set[str]:
    """The programs needed to render ``utterances`` (their engines that are programs, and sox)."""
    return {SOX, *(utt.engine for utt in utterances if utt.engine in PROGRAMS)}


def _espeak_ng(utt: Utterance) -> bytes:
    """One utterance through espeak-ng."""
    return subprocess.run(
        [
            *(ESPEAK_NG, "-v", utt.voice, "-s", str(utt.speed_wpm), "-p", str(utt.pitch)),
            *("--stdout", utt.spoken_text),
        ],
        capture_output=True,
        check=True,
    ).stdout


def _flite(utt: Utterance, scratch: Path) -> bytes:
    """One utterance through flite (it writes WAV only to a file)."""
    out = scratch / f"{utt.uttid}.wav"
    subprocess.run(
        [
            *(FLITE, "-voice", utt.voice, "--setf", f"duration_stretch={utt.stretch}"),
            *("-t", utt.spoken_text, "-o", str(out)),
        ],
        capture_output=True,
        check=True,
    )
    return out.read_bytes()


def _festival_string(text: str) -> str:
    """A Scheme string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival(utts: Sequence[Utterance], scratch: Path) -> list[bytes]:
    """A chunk of utterances through one festival process (voices switched as needed)."""
    lines: list[str] = []
    voice = None
    outs = []
    for utt in utts:
        if utt.voice != voice:
            voice = utt.voice
            lines.append(f"(voice_{voice})")
        out = scratch / f"{utt.uttid}.wav"
        outs.append(out)
        lines.append(f"(Parameter.set 'Duration_Stretch {utt.stretch})")
        lines.append(
            f"(utt.save.wave (utt.synth (Utterance Text {_festival_string(utt.spoken_text)}))"
            f" {_festival_string(str(out))} 'riff)"
        )
    script = scratch / "render.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    subprocess.run([FESTIVAL, "-b", str(script)], capture_output=True, check=True)
    missing = [str(out) for out in outs if not out.is_file()]
    if missing:
        raise RuntimeError(f"festival wrote no audio for {missing[:3]} (is the voice installed?)")
    return [out.read_bytes() for out in outs]


def _kokoro(utt: Utterance, kokoro: Kokoro) -> bytes:
    """One utterance through Kokoro, as 16-bit WAV."""
    out = io.BytesIO()
    audio = kokoro(utt.spoken_text, utt.voice, speed=1.0 / utt.stretch)
    sf.write(out, audio, KOKORO_RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


def speak(utts: Sequence[Utterance], kokoro: Kokoro | None = None) -> list[bytes]:
    """Synthesise utterances (any mix of engines) as WAV bytes, in order.

    Args:
        utts: Planned utterances.
        kokoro: The Kokoro voices, needed by ``kokoro`` utterances.

    Returns:
        list[bytes]: One WAV file's bytes per utterance.

    Raises:
        ValueError: If an utterance names an unknown engine, or Kokoro without ``kokoro``.
    """
    unknown = {utt.engine for utt in utts} - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown engines {sorted(unknown)}; known: {ENGINES}")
    if kokoro is None and any(utt.engine == KOKORO for utt in utts):
        raise ValueError("kokoro utterances need the voices: Kokoro(digits_recipe.kokoro.fetch())")
    wavs: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="digits-tts-") as tmp:
        scratch = Path(tmp)
        festival = [utt for utt in utts if utt.engine == FESTIVAL]
        if festival:
            wavs.update(zip((u.uttid for u in festival), _festival(festival, scratch), strict=True))
        for utt in utts:
            if utt.engine == ESPEAK_NG:
                wavs[utt.uttid] = _espeak_ng(utt)
            elif utt.engine == FLITE:
                wavs[utt.uttid] = _flite(utt, scratch)
            elif utt.engine == KOKORO:
                wavs[utt.uttid] = _kokoro(utt, kokoro)
    return [wavs[utt.uttid] for utt in utts]
