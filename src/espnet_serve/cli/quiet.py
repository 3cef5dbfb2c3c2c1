"""Keep a command's stdout for its own output: library prints and INFO chatter go elsewhere."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def library_output_to_stderr(quiet: bool) -> Iterator[None]:
    """Send library prints to stderr and, when ``quiet``, drop INFO logs (per-utterance chatter).

    espnet2 logs every beam search at INFO level and prints at import time;
    the report on stdout stays clean (``--json`` output is parseable).
    """
    root = logging.getLogger()
    level = root.level
    if quiet:
        root.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        root.setLevel(level)
