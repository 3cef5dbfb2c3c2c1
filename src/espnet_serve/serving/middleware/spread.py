"""Keep-alive connections spread over API workers that each hold their own models.

The API workers share one listening socket, and a worker woken by a burst of connections
accepts every one queued (asyncio's accept loop): 128 clients connecting at once were split
19 / 109 and 97 / 31 between two workers, and a keep-alive connection stays with its worker.
Where each worker decodes with its own models (``ESPNET_SERVE_MODEL_IN_PROCESS``), that
leaves one worker's model saturated while the other's idles. Each worker publishes its
requests in flight (:class:`WorkerLoads`); a worker serving more than the others closes the
connection of each answer it gives until it no longer does (``Connection: close``, which
every HTTP client honours by connecting again, possibly to another worker). Measured with
two workers and 32 keep-alive clients, 8 times each: without it the split stayed as the
first burst left it (0 / 32, 7 / 25, 8 / 24, 10 / 22, ...); with it, within 10 / 22 of even
by the first 0.3 s and mostly 16 / 16 after. Closing at random instead (one answer in eight)
did not even the split: the busier worker, awake in its event loop, won the new connections.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from espnet_serve.serving.drain import closing_connection

# How many more requests than the mean of the other workers one worker may serve before it
# closes connections (the counts move by one as each request starts and ends).
SLACK = 1


class WorkerLoads:
    """Every API worker's requests in flight, one slot each in a file they all map.

    Args:
        path: The shared file (made, and sized, by whichever worker comes first).
        workers: How many API workers the server runs.
        index: This worker's slot (0-based).
    """

    def __init__(self, path: Path, *, workers: int, index: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < workers * 8:
                os.ftruncate(fd, workers * 8)
        finally:
            os.close(fd)
        self._slots = np.memmap(path, dtype=np.int64, mode="r+", shape=(workers,))
        self._index = index
        self._slots[index] = 0  # a restarted worker starts empty

    def add(self, change: int) -> None:
        """This worker's count moved by ``change``."""
        self._slots[self._index] += change

    def over_share(self) -> bool:
        """Whether this worker serves more than the mean of the others, past :data:`SLACK`."""
        slots = np.asarray(self._slots)
        others = np.delete(slots, self._index)
        return bool(slots[self._index] > others.mean() + SLACK)


class SpreadConnections:
    """Counts this worker's requests; closes connections while it serves more than its share.

    Args:
        app: The ASGI app behind.
        loads: The workers' shared counts.
    """

    def __init__(self, app: ASGIApp, *, loads: WorkerLoads) -> None:
        self.app = app
        self.loads = loads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, counted; its answer closes the connection if over share."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return

        async def spreading_send(message: Message) -> None:
            if message["type"] == "http.response.start" and self.loads.over_share():
                message = closing_connection(message)
            await send(message)

        self.loads.add(1)
        try:
            await self.app(scope, receive, spreading_send)
        finally:
            self.loads.add(-1)


def worker_loads(workers: int) -> WorkerLoads | None:
    """This BentoML worker's :class:`WorkerLoads`, in the server's own multiprocess directory.

    ``None`` outside a ``bentoml serve`` worker (no worker index or directory).
    """
    from bentoml import server_context

    worker_index = server_context.worker_index
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if worker_index is None or not directory:
        return None
    return WorkerLoads(
        Path(directory) / "espnet_serve_worker_loads.bin", workers=workers, index=worker_index - 1
    )
