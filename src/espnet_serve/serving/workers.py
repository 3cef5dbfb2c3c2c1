"""The API workers of one server, as each sees the others: a row per worker in a shared file.

Where each API worker holds its own models (``ESPNET_SERVE_MODEL_IN_PROCESS`` with several
``API_WORKERS``), a worker alone cannot say whether the server is ready, nor whether it
serves more than its share. Each worker publishes its requests in flight (read by
:class:`~espnet_serve.serving.middleware.spread.SpreadConnections`) and whether its models
are loaded (read by ``/readyz``): the workers load in parallel, and a probe answered by the
first one ready must not send traffic to one still loading (its requests would get 503).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_IN_FLIGHT, _READY = 0, 1  # the columns of a worker's row


class WorkerBoard:
    """Every API worker's requests in flight and readiness, one row each in a file they all map.

    Args:
        path: The shared file (made, and sized, by whichever worker comes first).
        workers: How many API workers the server runs.
        index: This worker's row (0-based).
    """

    def __init__(self, path: Path, *, workers: int, index: int) -> None:
        size = workers * 2 * np.dtype(np.int64).itemsize
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self._rows = np.memmap(path, dtype=np.int64, mode="r+", shape=(workers, 2))
        self._index = index
        self._rows[index] = 0  # a restarted worker starts empty, its models not loaded

    def add(self, change: int) -> None:
        """This worker's requests in flight moved by ``change``."""
        self._rows[self._index, _IN_FLIGHT] += change

    def over_share(self, slack: int) -> bool:
        """Whether this worker serves more requests than the mean of the others, past ``slack``."""
        loads = np.asarray(self._rows[:, _IN_FLIGHT])
        others = np.delete(loads, self._index)
        return bool(loads[self._index] > others.mean() + slack)

    def set_ready(self) -> None:
        """This worker's models are loaded."""
        self._rows[self._index, _READY] = 1

    def unready(self) -> list[int]:
        """The workers (1-based, as BentoML numbers them) whose models are not loaded yet."""
        return [int(i) + 1 for i in np.flatnonzero(self._rows[:, _READY] == 0)]


def worker_board(workers: int) -> WorkerBoard | None:
    """This BentoML worker's :class:`WorkerBoard`, in the server's own multiprocess directory.

    ``None`` outside a ``bentoml serve`` worker (no worker index or directory), and for a
    single worker (nothing to share).
    """
    from bentoml import server_context

    worker_index = server_context.worker_index
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if workers < 2 or worker_index is None or not directory:
        return None
    return WorkerBoard(
        Path(directory) / "espnet_serve_workers.bin", workers=workers, index=worker_index - 1
    )
