"""The model worker's allocator setting: large blocks freed go back to the system.

Each case runs in a fresh interpreter: glibc's malloc, 32 blocks of 8 MiB written and freed
after a 16 MiB block was freed first (which, by default, raises the mmap threshold past them),
with a small block kept between each two, as a model worker's heap holds live objects between
its batches' buffers.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from espnet_serve.serving.allocator import MMAP_THRESHOLD_BYTES

CHILD = """
import ctypes, ctypes.util, os, sys
from espnet_serve.serving.allocator import map_large_blocks
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "set":
    assert map_large_blocks()

def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def written(size: int) -> int:
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block

libc.free(written(16 << 20))
before = rss()
blocks, kept = [], []
for _ in range(32):
    blocks.append(written(8 << 20))
    kept.append(written(4096))
peak = rss()
for block in blocks:
    libc.free(block)
print(peak - before, rss() - before)
"""


def run_child(mode: str) -> tuple[float, float]:
    """(growth at the peak, growth once the large blocks are freed), in MiB."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], check=True, capture_output=True, text=True
    ).stdout
    peak, after = (int(value) / 2**20 for value in out.split())
    return peak, after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_large_blocks_go_back_to_the_system_once_the_threshold_is_set():
    assert MMAP_THRESHOLD_BYTES <= 8 << 20  # the blocks are "large" for the setting
    peak, kept = run_child("default")
    assert peak >= 250 and kept >= 250  # glibc's default: the freed blocks stay with the process
    peak, kept = run_child("set")
    assert peak >= 250 and kept <= 16
