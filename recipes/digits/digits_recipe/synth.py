"""Synthesise spoken digit strings with text-to-speech engines and sox.

Engines (:mod:`digits_recipe.engines`): espeak-ng, flite, festival and Kokoro. Each
set is planned up front from its seed (texts, voices, speeds, noise,
augmentation), so the result does not depend on how many processes render it.
A set directory holds ``<uttid>.flac`` (16-bit, mono), ``transcripts.tsv``
(``uttid<TAB>text``) and ``conditions.tsv`` (how each utterance was made).
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
from typing import Any

import numpy as np
import soundfile as sf

from digits_recipe.config import SetSpec
from digits_recipe.engines import ESPEAK_NG, SOX_COMMAND, required_tools, speak
from digits_recipe.kokoro import Kokoro

TRANSCRIPTS = "transcripts.tsv"
CONDITIONS = "conditions.tsv"
NOISE_KINDS = ("white", "pink")
NO_NOISE = "none"  # augmentation: no added noise, so pads and pauses are digital silence
PEAK_LEVEL = 0.5
TRIM_LEVEL = 0.01  # the engines' leading/trailing silence: below 1% of the peak
AUGMENT_STREAM = 1  # second seed word of the augmentation draws (kept apart from the base draws)
ONSET_STREAM = 2  # second seed word of the onset-cut draws (added later: nothing else moves)
ONSET_FRAME_S = 0.01  # frame of the envelope an onset cut reads
WIDEBAND = "wideband"
# Telephone channels: band-limit to 300-3400 Hz, down to 8 kHz, through a codec and back.
TELEPHONE_RATE = 8000
CODEC_ARGS = {
    "ulaw": ("-t", "raw", "-e", "u-law", "-b", "8"),
    "gsm": ("-t", "gsm"),
    "amr": ("-t", "amr-nb"),
}
# A voice radio (an amateur's SSB or FM transceiver): 300-2700 Hz, compressed and lightly
# overdriven, through 8 kHz and back.
RADIO = "radio"
RADIO_EFFECTS = (
    *("sinc", "300-2700"),
    *("compand", "0.005,0.1", "-70,-70,-40,-15,0,-6", "-2"),
    *("overdrive", "6", "20"),
    *("rate", str(TELEPHONE_RATE)),
)
CHANNELS = (WIDEBAND, *CODEC_ARGS, RADIO)
RENDER_CHUNK = 25  # utterances per engine call (festival renders a chunk in one process)
# How the engine reads the words: as one phrase, as a list ("three, one, four"), or one word
# at a time, the recordings joined with digital silence (the way an IVR strings prompts).
PHRASE, LIST, WORDS = "phrase", "list", "words"
READINGS = (PHRASE, LIST, WORDS)
WORD_PAUSE_S = (0.05, 0.35)  # silence between the words of a WORDS reading, uniform


@dataclass(frozen=True)
class Utterance:
    """Everything needed to render one utterance deterministically.

    The defaults of the fields after ``noise_seed`` leave the audio as plain
    espeak-ng makes it (no augmentation).

    Attributes:
        uttid: Utterance id (also the file stem).
        text: The spoken words, space separated.
        voice: espeak-ng voice, ``accent+variant``; the voice name for other engines.
        speed_wpm: espeak-ng speed (espeak-ng only).
        pitch: espeak-ng pitch (espeak-ng only).
        speed_perturb: sox ``speed`` factor (tempo and pitch).
        noise: Noise colour, ``white`` or ``pink``, or ``none``.
        snr_db: Signal-to-noise ratio of the added noise.
        gain_db: Overall gain.
        pad_before_s: Extra leading silence.
        pad_after_s: Extra trailing silence.
        noise_seed: Seed of the noise samples.
        engine: Text-to-speech engine (:data:`digits_recipe.engines.ENGINES`).
        stretch: Duration stretch of flite and festival (> 1 is slower).
        tempo: sox ``tempo`` factor (duration only).
        pitch_cents: sox ``pitch`` shift.
        reverb: sox ``reverb`` reverberance, 0-100 (0: none).
        channel: ``wideband``, a telephone channel (``ulaw``, ``gsm``, ``amr``) or
            ``radio`` (a voice radio's).
        reading: ``phrase``, ``list`` (``"three, one, four"``: a pause after
            each word, the way people read out digits) or ``words`` (each word
            synthesised alone, joined with 0.05-0.35 s of silence).
        onset_cut: 0 (none), or cut each recording (the utterance, or each word of a
            ``words`` reading) tight at its start, where its envelope first reaches this
            fraction of its peak: a weak first consonant (``f`` of ``four``) mostly gone, as
            in word prompts trimmed by hand.
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
    engine: str = ESPEAK_NG
    stretch: float = 1.0
    tempo: float = 1.0
    pitch_cents: int = 0
    reverb: int = 0
    channel: str = WIDEBAND
    reading: str = PHRASE
    onset_cut: float = 0.0

    @property
    def spoken_text(self) -> str:
        """The text the engine reads: the words, comma-separated for a ``list`` reading."""
        return ", ".join(self.text.split()) if self.reading == LIST else self.text

    def pieces(self) -> list[Utterance]:
        """What the engine synthesises: the utterance, or each word alone for ``words``."""
        if self.reading != WORDS:
            return [self]
        return [
            dataclasses.replace(self, uttid=f"{self.uttid}_w{i}", text=word, reading=PHRASE)
            for i, word in enumerate(self.text.split())
        ]


def plan_set(spec: SetSpec, words: Sequence[str], num_words: tuple[int, int]) -> list[Utterance]:
    """Draw every utterance of a set from its seed.

    The base draws (text, voice, speed, noise, ...) come from ``spec.seed``
    alone, in the same order for every engine; the augmentation draws come from
    a stream of their own, so adding augmentation to a set leaves its texts and
    voices as they were.

    Args:
        spec: The set to plan.
        words: The vocabulary.
        num_words: Inclusive range of words per utterance.

    Returns:
        list[Utterance]: ``spec.size`` utterances, ids ``<set>_<index>``.
    """
    rng = np.random.default_rng(spec.seed)
    augment_rng = np.random.default_rng([spec.seed, AUGMENT_STREAM])
    onset_rng = np.random.default_rng([spec.seed, ONSET_STREAM])
    utterances = []
    for index in range(spec.size):
        count = int(rng.integers(num_words[0], num_words[1] + 1))
        text = " ".join(str(w) for w in rng.choice(words, size=count))
        accent, variant = str(rng.choice(spec.accents)), str(rng.choice(spec.variants))
        fields: dict[str, Any] = {
            "uttid": f"{spec.name}_{index:05d}",
            "text": text,
            "voice": f"{accent}+{variant}" if accent else variant,
            "speed_wpm": int(rng.integers(spec.speed_wpm[0], spec.speed_wpm[1] + 1)),
            "pitch": int(rng.integers(spec.pitch[0], spec.pitch[1] + 1)),
            "speed_perturb": float(rng.choice(spec.speed_perturb)),
            "noise": str(rng.choice(NOISE_KINDS)),
            "snr_db": round(float(rng.uniform(*spec.snr_db)), 2),
            "gain_db": round(float(rng.uniform(*spec.gain_db)), 2),
            "pad_before_s": round(float(rng.uniform(*spec.pad_s)), 3),
            "pad_after_s": round(float(rng.uniform(*spec.pad_s)), 3),
            "noise_seed": int(rng.integers(2**31)),
            "engine": spec.engine,
        }
        fields["onset_cut"] = _onset_cut(spec, onset_rng)
        utterances.append(Utterance(**{**fields, **_augmentation(spec, augment_rng)}))
    return utterances


def _augmentation(spec: SetSpec, rng: np.random.Generator) -> dict[str, Any]:
    """Draw the augmentation fields of one utterance (``noise`` only when it drops it)."""
    reverb = rng.random() < spec.reverb_prob
    fields: dict[str, Any] = {
        "stretch": round(float(rng.uniform(*spec.stretch)), 3),
        "tempo": round(float(rng.uniform(*spec.tempo)), 3),
        "pitch_cents": int(rng.integers(spec.pitch_cents[0], spec.pitch_cents[1] + 1)),
        "reverb": int(rng.integers(spec.reverb[0], spec.reverb[1] + 1)) if reverb else 0,
        "channel": str(rng.choice(spec.channels)),
        "reading": str(rng.choice(spec.readings)),
    }
    if rng.random() < spec.noise_free_prob:
        fields["noise"] = NO_NOISE
    return fields


def _onset_cut(spec: SetSpec, rng: np.random.Generator) -> float:
    """Draw one utterance's onset-cut level: 0 (no cut) or a level in ``spec.onset_cut``."""
    cut, level = rng.random() < spec.onset_cut_prob, float(rng.uniform(*spec.onset_cut))
    return round(level, 3) if cut else 0.0


def _effects(utt: Utterance, sample_rate: int) -> list[str]:
    """The sox effects of an utterance: speed, then tempo, pitch and reverb where set.

    A ``rate`` follows ``speed`` when more effects come: sox 14.4 crashes on
    ``speed`` directly followed by ``pitch``.
    """
    more = []
    if utt.tempo != 1.0:
        more += ["tempo", "-s", str(utt.tempo)]
    if utt.pitch_cents:
        more += ["pitch", str(utt.pitch_cents)]
    if utt.reverb:
        more += ["reverb", str(utt.reverb)]
    speed = ["speed", str(utt.speed_perturb)]
    return [*speed, "rate", str(sample_rate), *more] if more else speed


def _to_float(utt: Utterance, wav: bytes, sample_rate: int) -> np.ndarray:
    """Run an engine's WAV through sox: float32 at ``sample_rate`` with the utterance's effects."""
    raw = subprocess.run(
        [
            *(*SOX_COMMAND, "-t", "wav", "-"),
            *("-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(sample_rate)),
            *("-", *_effects(utt, sample_rate)),
        ],
        input=wav,
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.float32)


def _radio(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Pass ``signal`` through a voice radio's channel (:data:`RADIO_EFFECTS`) and back."""
    as_float = ("-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(sample_rate))
    out = subprocess.run(
        [*SOX_COMMAND, *as_float, "-", *as_float, "-", *RADIO_EFFECTS],
        input=np.clip(signal, -1.0, 1.0).astype(np.float32).tobytes(),
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, dtype=np.float32).astype(np.float64)


def _telephone(signal: np.ndarray, channel: str, sample_rate: int) -> np.ndarray:
    """Pass ``signal`` through a telephone channel: 300-3400 Hz, 8 kHz, a codec, and back."""
    as_float = ("-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1")
    encoded = subprocess.run(
        [
            *(*SOX_COMMAND, *as_float, "-r", str(sample_rate), "-"),
            *(*CODEC_ARGS[channel], "-r", str(TELEPHONE_RATE), "-c", "1", "-"),
            *("sinc", "300-3400"),
        ],
        input=np.clip(signal, -1.0, 1.0).astype(np.float32).tobytes(),
        capture_output=True,
        check=True,
    ).stdout
    decoded = subprocess.run(
        [
            *(*SOX_COMMAND, *CODEC_ARGS[channel], "-r", str(TELEPHONE_RATE), "-c", "1", "-"),
            *(*as_float, "-r", str(sample_rate), "-"),
        ],
        input=encoded,
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(decoded, dtype=np.float32).astype(np.float64)


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


def _cut_onset(speech: np.ndarray, level: float, sample_rate: int) -> np.ndarray:
    """Start ``speech`` at the first 10 ms frame whose RMS reaches ``level`` of the loudest's."""
    if not level:
        return speech
    frame = round(ONSET_FRAME_S * sample_rate)
    count = max(1, speech.size // frame)
    rms = np.sqrt(np.mean(speech[: count * frame].reshape(count, -1) ** 2, axis=1))
    return speech[int(np.argmax(rms >= level * rms.max())) * frame :]


def render(utt: Utterance, sample_rate: int, kokoro: Kokoro | None = None) -> np.ndarray:
    """Render one utterance: trimmed speech, padding, noise, channel and gain.

    Args:
        utt: The planned utterance.
        sample_rate: Output sample rate.
        kokoro: The Kokoro voices, for a ``kokoro`` utterance.

    Returns:
        np.ndarray: float32 samples in [-1, 1].
    """
    return _finish(utt, speak(utt.pieces(), kokoro), sample_rate)


def _join(utt: Utterance, parts: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """Concatenate the words of a ``words`` reading with random silences between them."""
    rng = np.random.default_rng([utt.noise_seed, AUGMENT_STREAM])
    pieces = [parts[0]]
    for part in parts[1:]:
        pieces += [np.zeros(round(rng.uniform(*WORD_PAUSE_S) * sample_rate)), part]
    return np.concatenate(pieces)


def _finish(utt: Utterance, wavs: Sequence[bytes], sample_rate: int) -> np.ndarray:
    """Turn the engine's WAV(s) into the utterance's final samples (see :func:`render`)."""
    parts = [
        _cut_onset(
            _trim(_to_float(utt, wav, sample_rate).astype(np.float64)), utt.onset_cut, sample_rate
        )
        for wav in wavs
    ]
    speech = _join(utt, parts, sample_rate) if len(parts) > 1 else parts[0]
    speech *= PEAK_LEVEL / (np.abs(speech).max() + 1e-12)
    before = np.zeros(round(utt.pad_before_s * sample_rate))
    after = np.zeros(round(utt.pad_after_s * sample_rate))
    signal = np.concatenate([before, speech, after])
    if utt.noise != NO_NOISE:
        noise_rms = np.sqrt(np.mean(speech**2)) / 10 ** (utt.snr_db / 20)
        rng = np.random.default_rng(utt.noise_seed)
        signal += noise_rms * _noise(utt.noise, signal.size, rng)
    if utt.channel == RADIO:
        signal = _radio(signal, sample_rate)
    elif utt.channel != WIDEBAND:
        signal = _telephone(signal, utt.channel, sample_rate)
    signal *= 10 ** (utt.gain_db / 20)
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


def write_tsv(path: Path, rows: Sequence[Sequence[object]]) -> None:
    """Write tab-separated rows."""
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)


def synthesise_set(
    utterances: Sequence[Utterance],
    out_dir: Path,
    *,
    sample_rate: int,
    jobs: int = 1,
    kokoro: Kokoro | None = None,
) -> Path:
    """Render a planned set into ``out_dir`` (replaced if it exists).

    Args:
        utterances: The planned utterances.
        out_dir: Set directory to write.
        sample_rate: Output sample rate.
        jobs: Parallel engine/sox pipelines.
        kokoro: The Kokoro voices, for ``kokoro`` utterances.

    Returns:
        Path: ``out_dir``.

    Raises:
        FileNotFoundError: If an engine the set uses, or sox, is not installed.
    """
    for tool in sorted(required_tools(utterances)):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} not found: make sysdeps")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    def write(chunk: Sequence[Utterance]) -> None:
        pieces = [utt.pieces() for utt in chunk]
        wavs = iter(speak([piece for utt_pieces in pieces for piece in utt_pieces], kokoro))
        for utt, utt_pieces in zip(chunk, pieces, strict=True):
            audio = _finish(utt, [next(wavs) for _ in utt_pieces], sample_rate)
            sf.write(out_dir / f"{utt.uttid}.flac", audio, sample_rate, subtype="PCM_16")

    chunks = [utterances[i : i + RENDER_CHUNK] for i in range(0, len(utterances), RENDER_CHUNK)]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(write, chunks))
    write_tsv(out_dir / TRANSCRIPTS, [(u.uttid, u.text) for u in utterances])
    fields = [f.name for f in dataclasses.fields(Utterance)]
    write_tsv(
        out_dir / CONDITIONS,
        [fields, *([getattr(u, name) for name in fields] for u in utterances)],
    )
    return out_dir
