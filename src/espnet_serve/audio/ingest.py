"""Audio ingest: any audio file in, the mono float32 waveform a model expects out.

The one decoding path for the HTTP server, ``espnet-serve eval``, the
benchmark and the recipe tools. It is built for untrusted files:

- the header is checked first: a sample rate outside the limits, too many
  channels or a declared duration over the limit is refused before any
  sample is read;
- samples are read in blocks of at most :data:`BLOCK_SAMPLES`, mixed down to
  mono and streamed through a soxr resampler, so memory and CPU follow the
  audio really present, never the header's claims; the frames really read are
  counted against the duration limit;
- a cut-off file is refused (:class:`TruncatedAudioError`) where the shortfall
  is certain: a WAV ``data`` chunk declaring more bytes than the file holds,
  and a FLAC stream that ends or fails before its STREAMINFO sample count.
  Other formats (OGG, MP3, ...) keep what decodes: their declared lengths are
  estimates;
- every failure is an :class:`AudioInputError` subclass (a ``ValueError``)
  with a plain message and a short ``code`` (the HTTP layer picks the status).

Only numpy, soundfile and soxr are imported, so this module is cheap to load.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np
import soundfile as sf
import soxr

from espnet_serve.audio.riff import find_data_chunk

# Declared types accepted as audio (plus any audio/*); the bytes decide the format.
GENERIC_CONTENT_TYPES = frozenset(
    {"application/octet-stream", "application/ogg", "video/ogg", "binary/octet-stream", ""}
)
RESAMPLER_QUALITY = "HQ"
# Samples (frames x channels) per read: 1 MiB of float32 whatever the header says.
BLOCK_SAMPLES = 1 << 18
# libsndfile's frame count for a stream whose length is not recorded.
_UNKNOWN_FRAMES = 2**63 - 1
_DECODE_ERRORS = (sf.SoundFileError, RuntimeError, ValueError, OverflowError)
_OPEN_FAILURES = {
    1: "format not recognised (send WAV, FLAC, OGG or MP3)",
    3: "the file is malformed",
    4: "its encoding is not supported",
}
_SUPPORTED = "send WAV, FLAC, OGG or MP3"


class AudioInputError(ValueError):
    """Base of the errors an audio file can cause; ``code`` names the kind for clients."""

    code: ClassVar[str] = "invalid_audio"


class UndecodableAudioError(AudioInputError):
    """The bytes are not decodable audio (corrupt, unknown format, NaN or inf samples)."""


class EmptyAudioError(AudioInputError):
    """The file is empty or decodes to no samples."""

    code = "empty_audio"


class AudioTooShortError(AudioInputError):
    """Fewer samples than the model needs, at the model's sample rate."""

    code = "audio_too_short"


class UnsupportedSampleRateError(AudioInputError):
    """The sample rate is outside the accepted range."""

    code = "unsupported_sample_rate"


class TooManyChannelsError(AudioInputError):
    """More channels than accepted."""

    code = "too_many_channels"


class TruncatedAudioError(AudioInputError):
    """The file declares more audio than its body holds (a cut-off upload)."""

    code = "truncated_audio"


class AudioTooLargeError(AudioInputError):
    """The audio is longer than the duration limit."""

    code = "audio_too_large"


class UnsupportedMediaTypeError(AudioInputError):
    """The declared content type is not audio."""

    code = "unsupported_media_type"


@dataclass(frozen=True)
class IngestLimits:
    """What :func:`decode_audio` accepts.

    Attributes:
        min_sample_rate: Lowest accepted source sample rate (Hz).
        max_sample_rate: Highest accepted source sample rate (Hz).
        max_channels: Most accepted channels.
        max_seconds: Longest accepted duration (declared or really read).
        min_samples: Fewest samples at the target rate (0: no minimum beyond one sample).
    """

    min_sample_rate: int = 8000
    max_sample_rate: int = 384000
    max_channels: int = 32
    max_seconds: float = 3600.0
    min_samples: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_sample_rate <= self.max_sample_rate:
            raise ValueError("Sample-rate limits need 1 <= min_sample_rate <= max_sample_rate.")
        if self.max_channels < 1 or self.max_seconds <= 0 or self.min_samples < 0:
            raise ValueError("Need max_channels >= 1, max_seconds > 0 and min_samples >= 0.")


@dataclass(frozen=True, eq=False)
class DecodedAudio:
    """Decoded audio, and what the source file was.

    Attributes:
        samples: Mono float32 1-D samples at ``sample_rate``.
        sample_rate: The target rate.
        source_sample_rate: The file's sample rate.
        source_channels: The file's channel count (mixed down by averaging).
        source_format: libsndfile's format name (``WAV``, ``FLAC``, ``OGG``, ``MP3``, ...).
    """

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    source_format: str

    @property
    def duration_seconds(self) -> float:
        """Length of the audio in seconds."""
        return len(self.samples) / self.sample_rate


def check_content_type(content_type: str | None) -> None:
    """Raise ``UnsupportedMediaTypeError`` for a declared type that is not audio.

    ``audio/*`` and generic binary types (``application/octet-stream``, none) pass.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type.startswith("audio/") or media_type in GENERIC_CONTENT_TYPES:
        return
    raise UnsupportedMediaTypeError(f"content type {media_type!r} is not audio; {_SUPPORTED}")


@dataclass(frozen=True)
class SourceInfo:
    """What the source file is, from its header.

    Attributes:
        sample_rate: The file's sample rate.
        channels: The file's channel count (mixed down by averaging).
        format: libsndfile's format name (``WAV``, ``FLAC``, ``OGG``, ``MP3``, ...).
        declared_seconds: The duration the header declares, if it declares one.
    """

    sample_rate: int
    channels: int
    format: str
    declared_seconds: float | None


class AudioStream:
    """An opened, header-checked audio file, read block by block at the target rate.

    Made by :func:`open_audio_stream`. Iterating yields mono float32 blocks at
    ``target_rate`` (at most about one second of source audio each) until the
    end of the file; :attr:`samples_read` counts what was yielded so far.
    """

    def __init__(
        self, sound: sf.SoundFile, target_rate: int, limits: IngestLimits, declared: int | None
    ) -> None:
        self.info = SourceInfo(
            sample_rate=sound.samplerate,
            channels=sound.channels,
            format=str(sound.format),
            declared_seconds=None if declared is None else declared / sound.samplerate,
        )
        self.target_rate = target_rate
        self.samples_read = 0
        self._sound = sound
        self._limits = limits
        self._declared = declared

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in _mono_blocks(self._sound, self.target_rate, self._limits, self._declared):
            self.samples_read += len(block)
            yield block


@contextlib.contextmanager
def open_audio_stream(
    source: bytes | str | Path | BinaryIO, *, target_rate: int, limits: IngestLimits
) -> Iterator[AudioStream]:
    """Open an audio file for reading in blocks, after checking its header.

    Args:
        source: The file's bytes, its path, or a seekable binary file object
            (e.g. an upload spooled to disk).
        target_rate: Sample rate the model expects.
        limits: What to accept (``min_samples`` is checked by :func:`decode_audio`
            only: a stream's length is known at its end).

    Yields:
        AudioStream: Iterate it for the samples; errors surface while iterating.

    Raises:
        AudioInputError: A subclass for each way the audio can be refused.
        FileNotFoundError: If ``source`` is a path that does not exist.
        ValueError: If ``target_rate`` is not positive.
    """
    if target_rate < 1:
        raise ValueError(f"target_rate must be positive, got {target_rate}.")
    with _open_source(source) as stream:
        if stream.seek(0, io.SEEK_END) == 0:
            raise EmptyAudioError("the audio file is empty (0 bytes)")
        data_chunk = find_data_chunk(stream)
        stream.seek(0)
        with _open_sound(stream) as sound:
            declared_frames = _check_header(sound, limits)
            if data_chunk is not None and data_chunk.truncated:
                raise TruncatedAudioError(
                    f"the audio file is cut short: its header declares "
                    f"{data_chunk.declared_bytes} bytes of audio data, the file holds "
                    f"{max(data_chunk.present_bytes, 0)}"
                )
            yield AudioStream(sound, target_rate, limits, declared_frames)


def decode_audio(
    source: bytes | str | Path | BinaryIO, *, target_rate: int, limits: IngestLimits
) -> DecodedAudio:
    """Decode an audio file, mix it down to mono and resample it to ``target_rate``.

    Args:
        source: The file's bytes, its path, or a seekable binary file object.
        target_rate: Sample rate the model expects.
        limits: What to accept.

    Returns:
        DecodedAudio: The waveform, ready for the model.

    Raises:
        AudioInputError: A subclass for each way the audio can be refused; for
            bytes, nothing else escapes.
        FileNotFoundError: If ``source`` is a path that does not exist (other
            ``OSError`` for unreadable paths).
        ValueError: If ``target_rate`` is not positive.
    """
    with open_audio_stream(source, target_rate=target_rate, limits=limits) as audio:
        pieces = list(audio)
        samples = np.concatenate(pieces) if len(pieces) > 1 else np.ascontiguousarray(pieces[0])
        check_length(len(samples), target_rate, limits.min_samples)
        return DecodedAudio(
            samples=samples,
            sample_rate=target_rate,
            source_sample_rate=audio.info.sample_rate,
            source_channels=audio.info.channels,
            source_format=audio.info.format,
        )


def read_audio_file(
    path: str | Path, *, target_rate: int, limits: IngestLimits | None = None
) -> np.ndarray:
    """Read an audio file as mono float32 samples at ``target_rate`` (for eval, bench, recipes).

    Args:
        path: The audio file.
        target_rate: Sample rate the model expects.
        limits: What to accept (default: :class:`IngestLimits` defaults).

    Returns:
        np.ndarray: 1-D float32 samples.

    Raises:
        AudioInputError: If the file is refused (see :func:`decode_audio`).
        FileNotFoundError: If the file does not exist.
    """
    return decode_audio(
        Path(path), target_rate=target_rate, limits=limits or IngestLimits()
    ).samples


@contextlib.contextmanager
def _open_source(source: bytes | str | Path | BinaryIO) -> Iterator[BinaryIO]:
    """A seekable binary stream over the bytes, the file object or the file."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source)
        return
    if not isinstance(source, str | Path):
        yield source
        return
    with Path(source).open("rb") as stream:
        yield stream


def _open_sound(stream: BinaryIO) -> sf.SoundFile:
    """Open ``stream`` with libsndfile (header only), refusing what it cannot parse."""
    try:
        return sf.SoundFile(stream)
    except _DECODE_ERRORS as exc:
        reason = _OPEN_FAILURES.get(getattr(exc, "code", None), "the file is damaged or not audio")
        raise UndecodableAudioError(f"could not decode the audio file: {reason}") from None


def _check_header(sound: sf.SoundFile, limits: IngestLimits) -> int | None:
    """Refuse the file on its header alone; return its declared frames (``None``: unknown)."""
    rate, channels, frames = sound.samplerate, sound.channels, sound.frames
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise UnsupportedSampleRateError(
            f"sample rate {rate} Hz is outside "
            f"{limits.min_sample_rate}\u2013{limits.max_sample_rate} Hz"
        )
    if channels > limits.max_channels:
        raise TooManyChannelsError(
            f"the audio has {channels} channels; at most {limits.max_channels} are accepted"
        )
    if not 0 <= frames < _UNKNOWN_FRAMES:
        return None
    if frames > limits.max_seconds * rate:
        raise AudioTooLargeError(
            f"audio is {frames / rate:.1f} s long; the limit is {limits.max_seconds:g} s"
        )
    return frames


def _mono_blocks(
    sound: sf.SoundFile, target_rate: int, limits: IngestLimits, declared_frames: int | None
) -> Iterator[np.ndarray]:
    """Read ``sound`` block by block: mono float32 blocks at ``target_rate``."""
    rate, channels = sound.samplerate, sound.channels
    max_frames = limits.max_seconds * rate  # may be infinite
    block_frames = max(1, min(rate, BLOCK_SAMPLES // channels))
    resampler = (
        None
        if rate == target_rate
        else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality=RESAMPLER_QUALITY)
    )
    frames_read = 0
    while True:
        try:
            block = sound.read(block_frames, dtype="float32", always_2d=True)
        except _DECODE_ERRORS:
            raise _damaged(sound, frames_read, declared_frames) from None
        if not len(block):
            break
        frames_read += len(block)
        if frames_read > max_frames:
            raise AudioTooLargeError(f"audio is longer than the {limits.max_seconds:g} s limit")
        with np.errstate(all="ignore"):  # inf - inf, overflow: refused just below
            mono = block[:, 0].copy() if channels == 1 else block.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():
            raise UndecodableAudioError("the audio holds NaN or infinite sample values")
        yield mono if resampler is None else resampler.resample_chunk(mono)
    if frames_read == 0:
        raise EmptyAudioError("the audio file holds no samples")
    if sound.format == "FLAC" and declared_frames is not None and frames_read < declared_frames:
        raise _damaged(sound, frames_read, declared_frames)
    if resampler is not None:
        yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def _damaged(sound: sf.SoundFile, frames_read: int, declared_frames: int | None) -> AudioInputError:
    """The error for audio that stops decoding before its end."""
    if sound.format == "FLAC" and declared_frames is not None:
        return TruncatedAudioError(
            f"the audio file is cut short or damaged: its header declares "
            f"{declared_frames / sound.samplerate:.2f} s of audio but the data ends early"
        )
    if sound.format == "FLAC":
        return UndecodableAudioError(
            "could not decode the audio file: this FLAC stream does not record its length; "
            "re-encode it"
        )
    return UndecodableAudioError(
        f"could not decode the audio file: the data is damaged after "
        f"{frames_read / sound.samplerate:.2f} s"
    )


def check_length(count: int, rate: int, min_samples: int) -> None:
    """Raise ``AudioTooShortError`` for fewer than ``min_samples`` (at least one) samples.

    Args:
        count: Samples decoded.
        rate: Their sample rate.
        min_samples: The model's shortest input.
    """
    if count >= max(min_samples, 1):
        return
    have = f"{count} sample{'' if count == 1 else 's'} ({_milliseconds(count, rate)} ms)"
    need = (
        f"the model needs at least {_milliseconds(min_samples, rate)} ms"
        if min_samples > 1
        else "at least one sample is needed"
    )
    raise AudioTooShortError(f"audio too short: {have}; {need}")


def _milliseconds(samples: int, rate: int) -> str:
    """``samples`` at ``rate`` in milliseconds, two decimals at most (``0.06``, ``65``)."""
    return f"{round(1000 * samples / rate, 2):g}"
