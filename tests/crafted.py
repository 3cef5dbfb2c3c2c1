"""Crafted uploads: WAV files whose headers lie, and the refusal each must get."""

from __future__ import annotations

import struct

TARGET = 16000


def wav_bytes(
    *,
    rate: int = TARGET,
    channels: int = 1,
    bits: int = 16,
    format_tag: int = 1,
    body: bytes | None = None,
    frames: int = 160,
    data_size: int | None = None,
    block_align: int | None = None,
    byte_rate: int | None = None,
    fmt_extra: bytes = b"",
    fmt_size: int | None = None,
    extra_chunks: bytes = b"",
    riff: bytes = b"RIFF",
) -> bytes:
    """A WAV file with every header field under the caller's control."""
    order = "<" if riff == b"RIFF" else ">"
    align = channels * bits // 8 if block_align is None else block_align
    if body is None:
        body = bytes(frames * max(align, 1))
    fmt = struct.pack(
        f"{order}HHIIHH",
        format_tag & 0xFFFF,
        channels & 0xFFFF,
        rate & 0xFFFFFFFF,
        (rate * align if byte_rate is None else byte_rate) & 0xFFFFFFFF,
        align & 0xFFFF,
        bits & 0xFFFF,
    )
    fmt += fmt_extra
    size = len(fmt) if fmt_size is None else fmt_size
    chunks = b"fmt " + struct.pack(f"{order}I", size & 0xFFFFFFFF) + fmt + extra_chunks
    declared = len(body) if data_size is None else data_size
    chunks += b"data" + struct.pack(f"{order}I", declared & 0xFFFFFFFF) + body
    return riff + struct.pack(f"{order}I", 4 + len(chunks)) + b"WAVE" + chunks


# name -> (file, HTTP status, error code) as the server must answer them.
CRAFTED_UPLOADS: dict[str, tuple[bytes, int, str]] = {
    "rate 2**31-1 Hz": (wav_bytes(rate=2**31 - 1, frames=16000), 400, "unsupported_sample_rate"),
    "rate 1,000,003 Hz": (wav_bytes(rate=1_000_003, frames=16000), 400, "unsupported_sample_rate"),
    "one sample": (wav_bytes(frames=1), 400, "audio_too_short"),
    "1024 channels x 160 frames": (wav_bytes(channels=1024, frames=160), 400, "too_many_channels"),
    "declares 1 GB of data": (wav_bytes(frames=16000, data_size=10**9), 400, "truncated_audio"),
}
