"""Graceful shutdown: on SIGTERM, finish the accepted work before the server stops.

uvicorn (which runs every BentoML worker) stops accepting connections as soon as
it sees SIGTERM. :class:`SigtermDrain` takes the signal over from it: the
worker reports unready and keeps serving until its requests in flight are done
(and, for the model service, until it has been idle for a quiet period, since
the API service may still be sending what it accepted), bounded by a drain
timeout; only then is the signal handed to uvicorn, which shuts down as usual.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType
from typing import Any

from espnet_serve.serving.middleware.inflight import InFlight

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.05


class SigtermDrain:
    """Delays the server's SIGTERM handling until the worker's requests are done.

    Args:
        name: The service, for log lines.
        in_flight: The worker's request counter.
        timeout_seconds: Longest drain; the signal is handed on after it regardless.
        quiet_seconds: How long the worker must have been idle before it stops.
    """

    def __init__(
        self, name: str, in_flight: InFlight, *, timeout_seconds: float, quiet_seconds: float = 0.0
    ) -> None:
        self.name = name
        self.in_flight = in_flight
        self.timeout_seconds = timeout_seconds
        self.quiet_seconds = quiet_seconds
        self.draining = False
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Take SIGTERM over from the running server; call from the worker's event loop."""
        self._loop = asyncio.get_running_loop()
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.draining:  # a second SIGTERM: stop now
            self._hand_on(signum, frame)
            return
        self.draining = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._start, signum)

    def _start(self, signum: int) -> None:
        logger.info(
            "%s: SIGTERM; draining %d request(s) in flight (at most %.0f s).",
            self.name,
            self.in_flight.count,
            self.timeout_seconds,
        )
        self._task = asyncio.get_running_loop().create_task(self._drain(signum))

    async def _drain(self, signum: int) -> None:
        deadline = time.monotonic() + self.timeout_seconds
        while not self.in_flight.idle_for(self.quiet_seconds):
            if time.monotonic() >= deadline:
                logger.warning(
                    "%s: drain timeout; stopping with %d request(s) in flight.",
                    self.name,
                    self.in_flight.count,
                )
                break
            await asyncio.sleep(POLL_SECONDS)
        else:
            logger.info("%s: drained; shutting down.", self.name)
        self._hand_on(signum, None)

    def _hand_on(self, signum: int, frame: FrameType | None) -> None:
        """Give the signal to the handler that was there before (uvicorn's)."""
        if callable(self._previous):
            self._previous(signum, frame)
            return
        signal.signal(signum, self._previous or signal.SIG_DFL)
        signal.raise_signal(signum)
