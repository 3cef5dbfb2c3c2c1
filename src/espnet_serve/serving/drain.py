"""Graceful shutdown: on SIGTERM, finish the accepted work before the server stops.

uvicorn (which runs every BentoML worker) stops accepting connections as soon as
it sees SIGTERM. :class:`SigtermDrain` takes the signal over from it: the
worker reports unready and keeps serving until its requests in flight are done
(and, for the model service, until it has been idle for a quiet period, since
the API service may still be sending what it accepted), bounded by a drain
timeout. Then it closes the door: the listening socket stops completing new
connections (:mod:`~espnet_serve.serving.listener`), the connections already queued
on it are accepted and answered, and only then is the signal handed to uvicorn,
which shuts down as usual (whatever closing the door met: an error there is logged,
never a reason to keep serving until the kill). A client that connects later is
refused at connect once the server has gone, never reset after its request was sent.
While draining, every response closes its connection (:class:`CloseWhileDraining`), so
that no idle keep-alive connection is left for uvicorn to close under a client's next
request.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from espnet_serve.serving import listener
from espnet_serve.serving.middleware.inflight import InFlight

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.05
# Longest wait for the connections queued on the listening socket to be accepted.
QUEUE_WAIT_SECONDS = 2.0
# Time for the connections accepted last to send their requests and get their answers.
SETTLE_SECONDS = 0.25


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
        """Take SIGTERM over from the running server; call from the worker's event loop.

        A worker that starts where another one closed the door (one restarted worker of
        several sharing the listening socket) opens it again.
        """
        self._loop = asyncio.get_running_loop()
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        for sock in listener.listening_sockets():
            listener.resume_accepting(sock)

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
        try:
            await self._close_the_door()
        except Exception:
            logger.exception("%s: closing the listening sockets failed; stopping.", self.name)
        self._hand_on(signum, None)

    async def _close_the_door(self) -> None:
        """Complete no new connection; accept and answer the ones already queued.

        Where the kernel refuses the socket filter, a socket is shut down instead as soon
        as its queue is seen empty (:func:`~espnet_serve.serving.listener.refuse_connections`).
        """
        sockets = listener.listening_sockets()
        unfiltered = [sock for sock in sockets if not listener.stop_accepting(sock)]
        if unfiltered:
            logger.warning(
                "%s: the kernel refuses this process a socket filter; refusing new "
                "connections once the accept queue is empty.",
                self.name,
            )
        deadline = time.monotonic() + QUEUE_WAIT_SECONDS
        while True:
            for sock in [s for s in unfiltered if not listener.queued_connections(s)]:
                listener.refuse_connections(sock)
                unfiltered.remove(sock)
            if not any(listener.queued_connections(sock) for sock in sockets):
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
        for sock in unfiltered:  # the queue never emptied: refuse anyway
            listener.refuse_connections(sock)
        await asyncio.sleep(SETTLE_SECONDS)
        while not self.in_flight.idle_for(0) and time.monotonic() < deadline + SETTLE_SECONDS:
            await asyncio.sleep(POLL_SECONDS)
        logger.info(
            "%s: no longer accepting connections (%d listening socket(s)).", self.name, len(sockets)
        )
        for sock in sockets:
            sock.close()

    def _hand_on(self, signum: int, frame: FrameType | None) -> None:
        """Give the signal to the handler that was there before (uvicorn's)."""
        if callable(self._previous):
            self._previous(signum, frame)
            return
        signal.signal(signum, self._previous or signal.SIG_DFL)
        signal.raise_signal(signum)


class CloseWhileDraining:
    """While the worker drains, every response closes its connection (``Connection: close``).

    Args:
        app: The ASGI app behind.
        is_draining: Whether the worker is shutting down.
    """

    def __init__(self, app: ASGIApp, *, is_draining: Callable[[], bool]) -> None:
        self.app = app
        self.is_draining = is_draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add ``Connection: close`` to its response while draining."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and self.is_draining():
                message = closing_connection(message)
            await send(message)

        await self.app(scope, receive, closing_send)


def closing_connection(start: Message) -> Message:
    """A response start (``http.response.start``) that closes its connection after it."""
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"connection"]
    return {**start, "headers": [*headers, (b"connection", b"close")]}
