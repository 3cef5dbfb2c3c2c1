"""Count the requests a worker is serving, and when it last became idle (the SIGTERM drain)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send


class InFlight:
    """Counts the requests a worker is serving and when it last became idle."""

    def __init__(self) -> None:
        self.count = 0
        self.idle_since = time.monotonic()

    def enter(self) -> None:
        """A request started."""
        self.count += 1

    def exit(self) -> None:
        """A request ended."""
        self.count -= 1
        if self.count == 0:
            self.idle_since = time.monotonic()

    def idle_for(self, seconds: float) -> bool:
        """Whether nothing has been in flight for at least ``seconds``."""
        return self.count == 0 and time.monotonic() - self.idle_since >= seconds


class InFlightMiddleware:
    """Counts POST requests (the work; probes and metrics are GETs) in ``in_flight``."""

    def __init__(self, app: ASGIApp, *, in_flight: InFlight) -> None:
        self.app = app
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, counted while it runs."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        self.in_flight.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.exit()
