"""Count the work requests a worker is serving, for the SIGTERM drain."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from espnet_serve.serving.drain import InFlight


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
