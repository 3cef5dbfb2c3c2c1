"""Upload decoding: formats, mono mix-down, resampling, and the errors bad input gets."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from espnet_serve.serving.audio import (
    AudioTooLargeError,
    EmptyAudioError,
    UndecodableAudioError,
    UnsupportedMediaTypeError,
    check_content_type,
    decode_audio,
)


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", None), ("OGG", None)])
def test_formats_decode_to_mono_float32(fmt: str, subtype: str | None):
    decoded = decode_audio(
        encode(tone(1.0, 16000), 16000, fmt, subtype), target_rate=16000, max_seconds=10
    )
    assert decoded.samples.dtype == np.float32
    assert decoded.samples.ndim == 1
    assert decoded.source_format == fmt
    assert abs(decoded.duration_seconds - 1.0) < 0.01


def test_stereo_is_mixed_down_and_resampled():
    left, right = tone(2.0, 44100, 300.0), tone(2.0, 44100, 300.0) * 0.5
    data = encode(np.stack([left, right], axis=1), 44100, "WAV", "FLOAT")
    decoded = decode_audio(data, target_rate=16000, max_seconds=10)
    assert decoded.source_sample_rate == 44100 and decoded.sample_rate == 16000
    assert len(decoded.samples) == 32000
    expected = tone(2.0, 16000, 300.0) * 0.75
    # Polyphase resampling of a pure tone keeps it (edges aside).
    assert np.allclose(decoded.samples[1000:-1000], expected[1000:-1000], atol=0.01)


@pytest.mark.parametrize("data", [b"RIFF\x00\x00garbage", b"not audio at all" * 10])
def test_undecodable_bytes(data: bytes):
    with pytest.raises(UndecodableAudioError, match="Could not decode"):
        decode_audio(data, target_rate=16000, max_seconds=10)


def test_truncated_wav_is_undecodable_or_short():
    data = encode(tone(1.0, 16000), 16000, "FLAC")[:200]
    with pytest.raises((UndecodableAudioError, EmptyAudioError)):
        decode_audio(data, target_rate=16000, max_seconds=10)


def test_empty_inputs():
    with pytest.raises(EmptyAudioError, match="0 bytes"):
        decode_audio(b"", target_rate=16000, max_seconds=10)
    with pytest.raises(EmptyAudioError, match="no samples"):
        decode_audio(
            encode(np.zeros(0, np.float32), 16000, "WAV"), target_rate=16000, max_seconds=10
        )


def test_nan_samples_are_rejected():
    samples = tone(0.5, 16000)
    samples[100] = np.nan
    with pytest.raises(UndecodableAudioError, match="NaN"):
        decode_audio(encode(samples, 16000, "WAV", "FLOAT"), target_rate=16000, max_seconds=10)


def test_duration_limit():
    with pytest.raises(AudioTooLargeError, match="limit is 2 s") as info:
        decode_audio(encode(tone(3.0, 8000), 8000, "WAV"), target_rate=16000, max_seconds=2)
    assert info.value.status_code == 413


@pytest.mark.parametrize(
    "content_type",
    [
        "audio/wav",
        "audio/x-flac",
        "audio/ogg; codecs=vorbis",
        "application/octet-stream",
        None,
        "application/ogg",
    ],
)
def test_audio_content_types_pass(content_type: str | None):
    check_content_type(content_type)


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "application/json"])
def test_non_audio_content_types_are_415(content_type: str):
    with pytest.raises(UnsupportedMediaTypeError, match=content_type) as info:
        check_content_type(content_type)
    assert info.value.status_code == 415
