"""Samples out → the bytes of an audio format, as OpenAI's ``/v1/audio/speech`` names them.

``wav`` and ``flac`` keep the model's own rate and 16-bit samples; ``pcm`` is raw 16-bit
little-endian mono at 24 kHz, as OpenAI defines it; ``mp3`` keeps the model's rate where
MPEG allows it; ``opus`` (in Ogg) is at 24 kHz. ``wav`` and ``pcm`` can be streamed
sentence by sentence (:class:`StreamEncoder`); the others are encoded whole. An
enhancement's tracks are one ``wav`` or ``flac`` file, a channel per track (:func:`encode_tracks`).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

PCM_RATE = 24_000  # OpenAI's pcm
OPUS_RATES = (48_000, 24_000, 16_000, 12_000, 8_000)
MP3_RATES = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
UNKNOWN_SIZE = 0xFFFFFFFF  # a streamed WAV's RIFF and data sizes, as OpenAI sends them


@dataclass(frozen=True)
class AudioFormat:
    """One response format.

    Attributes:
        name: OpenAI's ``response_format`` value.
        media_type: The response's ``Content-Type``.
        streamable: Whether chunks can be sent as each sentence is ready.
    """

    name: str
    media_type: str
    streamable: bool


FORMATS: dict[str, AudioFormat] = {
    "mp3": AudioFormat("mp3", "audio/mpeg", streamable=False),
    "opus": AudioFormat("opus", "audio/ogg", streamable=False),
    "flac": AudioFormat("flac", "audio/flac", streamable=False),
    "wav": AudioFormat("wav", "audio/wav", streamable=True),
    "pcm": AudioFormat("pcm", "audio/pcm", streamable=True),
}
UNSUPPORTED_FORMATS = ("aac",)  # OpenAI's; libsndfile has no AAC encoder


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as 16-bit little-endian PCM (rounded, clipped)."""
    scaled = np.round(np.clip(samples, -1.0, 1.0) * 32767.0)
    return scaled.astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int | None, channels: int = 1) -> bytes:
    """A 44-byte 16-bit WAV header (``None``: the unknown size of a streamed WAV)."""
    data = UNKNOWN_SIZE if data_bytes is None else data_bytes
    riff = UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    frame = 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * frame, frame, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def resampled(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` at ``target`` Hz (soxr; unchanged when the rates agree)."""
    if rate == target:
        return samples
    return soxr.resample(samples, rate, target).astype(np.float32)


def encode(samples: np.ndarray, sample_rate: int, name: str) -> bytes:
    """The whole of ``samples`` in the format ``name`` (see :data:`FORMATS`)."""
    if name == "wav":
        data = pcm16(samples)
        return wav_header(sample_rate, len(data)) + data
    if name == "pcm":
        return pcm16(resampled(samples, sample_rate, PCM_RATE))
    buffer = io.BytesIO()
    if name == "flac":
        whole = np.frombuffer(pcm16(samples), dtype="<i2")  # the samples a WAV would hold
        soundfile.write(buffer, whole, sample_rate, format="FLAC", subtype="PCM_16")
    elif name == "mp3":
        rate = sample_rate if sample_rate in MP3_RATES else PCM_RATE
        clip = resampled(samples, sample_rate, rate)
        soundfile.write(buffer, clip, rate, format="MP3", subtype="MPEG_LAYER_III")
    elif name == "opus":
        rate = sample_rate if sample_rate in OPUS_RATES else PCM_RATE
        clip = resampled(samples, sample_rate, rate)
        soundfile.write(buffer, clip, rate, format="OGG", subtype="OPUS")
    else:
        raise ValueError(f"Unknown audio format {name!r}.")
    return buffer.getvalue()


TRACK_FORMATS: dict[str, AudioFormat] = {name: FORMATS[name] for name in ("wav", "flac")}


def encode_tracks(tracks: np.ndarray, sample_rate: int, name: str) -> bytes:
    """Tracks ``(samples, tracks)`` as one 16-bit file with a channel per track.

    Args:
        tracks: One column per track (an enhancement's speakers).
        sample_rate: Their rate.
        name: ``wav`` or ``flac`` (:data:`TRACK_FORMATS`).
    """
    interleaved = np.frombuffer(pcm16(tracks), dtype="<i2").reshape(tracks.shape)
    if name == "wav":
        data = interleaved.tobytes()
        return wav_header(sample_rate, len(data), channels=tracks.shape[1]) + data
    if name == "flac":
        buffer = io.BytesIO()
        soundfile.write(buffer, interleaved, sample_rate, format="FLAC", subtype="PCM_16")
        return buffer.getvalue()
    raise ValueError(f"Tracks are written as wav or flac, not {name!r}.")


class StreamEncoder:
    """Encodes sentence after sentence of one response in a streamable format.

    Args:
        sample_rate: The samples' rate.
        name: ``wav`` or ``pcm``.
        sentences: How many chunks will come: with one, a WAV gets its exact sizes;
            with more, the unknown size a streamed WAV carries.
    """

    def __init__(self, sample_rate: int, name: str, sentences: int) -> None:
        if not FORMATS[name].streamable:
            raise ValueError(f"{name} is not streamed.")
        self.sample_rate = sample_rate
        self.name = name
        self.sentences = sentences
        self._started = False

    def chunk(self, samples: np.ndarray) -> bytes:
        """The next sentence's bytes (the first carries a WAV's header)."""
        if self.name == "pcm":
            return pcm16(resampled(samples, self.sample_rate, PCM_RATE))
        data = pcm16(samples)
        if self._started:
            return data
        self._started = True
        size = len(data) if self.sentences == 1 else None
        return wav_header(self.sample_rate, size) + data
