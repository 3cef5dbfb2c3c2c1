"""Keep-alive connections spread over API workers that each hold their own models.

The API workers share one listening socket, and a worker woken by a burst of connections
accepts every one queued (asyncio's accept loop): 128 clients connecting at once were split
19 / 109 and 97 / 31 between two workers, and a keep-alive connection stays with its worker.
Where each worker decodes with its own models (``ESPNET_SERVE_MODEL_IN_PROCESS``), that
leaves one worker's model saturated while the other's idles. Each worker publishes its
requests in flight (:class:`~espnet_serve.serving.workers.WorkerBoard`); a worker serving
more than the others closes the connection of each answer it gives until it no longer does
(``Connection: close``, which every HTTP client honours by connecting again, possibly to
another worker). Measured with
two workers and 32 keep-alive clients, 8 times each: without it the split stayed as the
first burst left it (0 / 32, 7 / 25, 8 / 24, 10 / 22, ...); with it, within 10 / 22 of even
by the first 0.3 s and mostly 16 / 16 after. Closing at random instead (one answer in eight)
did not even the split: the busier worker, awake in its event loop, won the new connections.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from espnet_serve.serving.drain import closing_connection
from espnet_serve.serving.workers import WorkerBoard

# How many more requests than the mean of the other workers one worker may serve before it
# closes connections (the counts move by one as each request starts and ends).
SLACK = 1


class SpreadConnections:
    """Counts this worker's requests; closes connections while it serves more than its share.

    Args:
        app: The ASGI app behind.
        board: The workers' shared counts.
    """

    def __init__(self, app: ASGIApp, *, board: WorkerBoard) -> None:
        self.app = app
        self.board = board

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, counted; its answer closes the connection if over share."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return

        async def spreading_send(message: Message) -> None:
            if message["type"] == "http.response.start" and self.board.over_share(SLACK):
                message = closing_connection(message)
            await send(message)

        self.board.add(1)
        try:
            await self.app(scope, receive, spreading_send)
        finally:
            self.board.add(-1)
