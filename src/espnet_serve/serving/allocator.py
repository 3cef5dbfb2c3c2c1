"""The model worker's memory allocator: a large block freed goes back to the system.

glibc's malloc serves a block over its mmap threshold with a mapping of its own, unmapped when
freed; but each time such a block is freed it raises the threshold to that block's size (up to
32 MiB), and blocks under the threshold come from the heap, whose freed memory stays with the
process, fragmented. A model worker allocates and frees hundreds of MiB per batch (the queued
segments, the encoder's activations), so its resident memory grew with each round of load by how
the blocks happened to fall: 8 concurrent 10-minute uploads grew the embedded model's worker by
279 MiB over idle, and by 661 and 714 MiB in two CI runs of six. A fixed threshold
(``mallopt(M_MMAP_THRESHOLD)``, which also stops glibc moving it) keeps the large blocks in
mappings of their own: 78-105 MiB per round, at the same speed; a lower threshold maps more
blocks and costs time (128 KiB: 20 % slower). ``bench/README.md`` ("Long uploads") has the runs.

Only a model service in its own process sets it: with the models inside the API workers
(``ESPNET_SERVE_MODEL_IN_PROCESS``), short clips at 32 and 128 clients lost about 20 % of their
throughput with it (393 and 398 against 321 and 334 audio-s/s at 32, two runs each).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's malloc.h
# Measured against 128 KiB (glibc's starting value) and 1 MiB: as small for memory, no slower.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def map_large_blocks(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix malloc's mmap threshold for this process, where the C library is glibc.

    Args:
        threshold_bytes: Blocks this large or larger get mappings of their own.

    Returns:
        Whether it was set (``False`` where the C library has no ``mallopt``, as on macOS).
    """
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is None:
        logger.info("No mallopt in this C library: malloc keeps its own mmap threshold.")
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))
