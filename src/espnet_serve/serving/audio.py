"""Turn an uploaded audio file into the mono float32 waveform a model expects."""

from __future__ import annotations

import io
from dataclasses import dataclass
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

# Declared types accepted as audio (plus any audio/*); the bytes decide the format.
GENERIC_CONTENT_TYPES = frozenset(
    {"application/octet-stream", "application/ogg", "video/ogg", "binary/octet-stream", ""}
)


class AudioInputError(Exception):
    """Base of the errors an upload can cause; ``status_code`` and ``kind`` go to the client."""

    status_code = 400
    kind = "invalid_audio"


class UndecodableAudioError(AudioInputError):
    """The bytes are not audio soundfile can decode (corrupt, truncated, other format)."""


class EmptyAudioError(AudioInputError):
    """The file decodes to zero samples."""

    kind = "empty_audio"


class AudioTooLargeError(AudioInputError):
    """The upload is over the byte or duration limit."""

    status_code = 413
    kind = "audio_too_large"


class UnsupportedMediaTypeError(AudioInputError):
    """The declared content type is not audio."""

    status_code = 415
    kind = "unsupported_media_type"


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded upload: mono float32 samples at ``sample_rate``, and the source rate."""

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_format: str

    @property
    def duration_seconds(self) -> float:
        """Length of the audio in seconds."""
        return len(self.samples) / self.sample_rate


def check_content_type(content_type: str | None) -> None:
    """Raise ``UnsupportedMediaTypeError`` for a declared type that is not audio."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type.startswith("audio/") or media_type in GENERIC_CONTENT_TYPES:
        return
    raise UnsupportedMediaTypeError(
        f"Unsupported content type {media_type!r}: send audio (WAV, FLAC, OGG, MP3, ...)."
    )


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D float32 signal with a polyphase filter (exact integer ratio)."""
    if source_rate == target_rate:
        return samples
    divisor = gcd(source_rate, target_rate)
    resampled = resample_poly(samples, target_rate // divisor, source_rate // divisor)
    return resampled.astype(np.float32, copy=False)


def decode_audio(data: bytes, *, target_rate: int, max_seconds: float) -> DecodedAudio:
    """Decode audio bytes, mix down to mono and resample to ``target_rate``.

    Args:
        data: The uploaded file's bytes.
        target_rate: Sample rate the model expects.
        max_seconds: Longest accepted duration.

    Returns:
        DecodedAudio: The waveform, ready for the model.

    Raises:
        UndecodableAudioError: If the bytes are not decodable audio or hold NaN/inf.
        EmptyAudioError: If there are no samples.
        AudioTooLargeError: If the audio is longer than ``max_seconds``.
    """
    if not data:
        raise EmptyAudioError("The audio file is empty (0 bytes).")
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio_file:
            source_rate = int(audio_file.samplerate)
            source_format = str(audio_file.format)
            if audio_file.frames > max_seconds * source_rate:
                raise AudioTooLargeError(
                    f"Audio is {audio_file.frames / source_rate:.1f} s long; "
                    f"the limit is {max_seconds:g} s."
                )
            frames = audio_file.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise UndecodableAudioError(f"Could not decode the audio file: {exc.error_string}") from exc
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UndecodableAudioError(f"Could not decode the audio file: {exc}") from exc
    if frames.shape[0] == 0:
        raise EmptyAudioError("The audio file holds no samples.")
    if frames.shape[0] > max_seconds * source_rate:
        raise AudioTooLargeError(f"Audio is longer than the {max_seconds:g} s limit.")
    mono = frames.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise UndecodableAudioError("The audio holds NaN or infinite samples.")
    return DecodedAudio(
        samples=resample(mono, source_rate, target_rate),
        sample_rate=target_rate,
        source_sample_rate=source_rate,
        source_format=source_format,
    )
