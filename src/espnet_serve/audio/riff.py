"""Find the ``data`` chunk of a RIFF/WAVE file without trusting its sizes.

libsndfile quietly clamps a WAV ``data`` chunk that declares more bytes than
the file holds, so a cut-off upload decodes as a shorter clip. This walk over
the chunk headers (a bounded number of seeks, no payload read) tells the
declared size from the bytes actually present, so callers can refuse it.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

MAX_CHUNKS = 256
# Sizes that streaming writers put in a header they cannot rewrite: "length unknown".
UNKNOWN_SIZE_THRESHOLD = 0x7FFF0000
_BYTE_ORDER = {b"RIFF": "<", b"RIFX": ">"}


@dataclass(frozen=True)
class DataChunk:
    """The ``data`` chunk of a WAVE file.

    Attributes:
        declared_bytes: Size in the chunk header.
        present_bytes: Bytes from the start of the chunk's payload to the end of the file.
    """

    declared_bytes: int
    present_bytes: int

    @property
    def truncated(self) -> bool:
        """Whether the header declares more bytes than are present (an unknown size never is)."""
        return self.present_bytes < self.declared_bytes < UNKNOWN_SIZE_THRESHOLD


def find_data_chunk(stream: BinaryIO) -> DataChunk | None:
    """Locate the ``data`` chunk of a RIFF (little-endian) or RIFX (big-endian) WAVE stream.

    The stream is left at an unspecified position; seek it back before reuse.

    Args:
        stream: A seekable binary stream positioned anywhere.

    Returns:
        DataChunk | None: The chunk, or ``None`` for anything else (not WAVE,
        RF64/W64, no ``data`` chunk among the first ``MAX_CHUNKS``).
    """
    total = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    head = stream.read(12)
    order = _BYTE_ORDER.get(head[:4])
    if order is None or head[8:12] != b"WAVE":
        return None
    position = 12
    for _ in range(MAX_CHUNKS):
        stream.seek(position)
        header = stream.read(8)
        if len(header) < 8:
            return None
        (size,) = struct.unpack(f"{order}I", header[4:])
        if header[:4] == b"data":
            return DataChunk(declared_bytes=size, present_bytes=total - position - 8)
        position += 8 + size + (size & 1)
        if position >= total:
            return None
    return None
