"""The listening-socket door of the SIGTERM drain, on real loopback sockets.

Stopped: open connections carry on, a new one does not complete, and once the socket is
closed it is refused at connect (not reset after sending). Resumed: connections complete
again. The accept queue is counted. A worker finds its listening sockets by itself. Where
the kernel refuses socket filters, the socket is shut down instead and the drain still
hands SIGTERM on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import threading

import pytest

from espnet_serve.serving import listener
from espnet_serve.serving.drain import SigtermDrain
from espnet_serve.serving.middleware.inflight import InFlight

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="socket filters are Linux's")


@pytest.fixture()
def server() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def connect(sock: socket.socket, timeout: float) -> socket.socket:
    return socket.create_connection(sock.getsockname(), timeout=timeout)


def test_the_worker_finds_its_listening_sockets(server):
    found = listener.listening_sockets()
    try:
        assert server.getsockname() in [sock.getsockname() for sock in found]
    finally:
        for sock in found:
            sock.close()


def test_a_stopped_socket_completes_no_new_connection_and_keeps_open_ones(server):
    client = connect(server, 2)
    assert listener.queued_connections(server) == 1
    accepted, _ = server.accept()
    assert listener.queued_connections(server) == 0
    listener.stop_accepting(server)
    with pytest.raises(TimeoutError):
        connect(server, 0.5)
    assert listener.queued_connections(server) == 0
    client.sendall(b"request")
    assert accepted.recv(16) == b"request"
    accepted.sendall(b"answer")
    assert client.recv(16) == b"answer"
    listener.resume_accepting(server)
    connect(server, 2).close()
    listener.resume_accepting(server)  # twice is fine
    for sock in (client, accepted):
        sock.close()


def test_a_client_waiting_on_a_stopped_socket_is_refused_when_it_closes(server):
    listener.stop_accepting(server)
    outcome: list[BaseException | None] = []

    def late_client() -> None:
        try:
            connect(server, 10).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=late_client)
    thread.start()
    threading.Event().wait(0.3)
    server.close()
    thread.join(15)
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionRefusedError), outcome


def test_a_refused_socket_turns_new_connections_away_and_the_event_loop_stays_quiet(caplog):
    """The fallback where the kernel refuses socket filters: shutdown, refused at connect."""
    accepted: list[int] = []

    async def scenario() -> BaseException | None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(1)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        (await asyncio.to_thread(socket.create_connection, address, 2)).close()
        found = [s for s in listener.listening_sockets() if s.getsockname() == address]
        for sock in found:
            listener.refuse_connections(sock)
        await asyncio.sleep(0.2)
        try:
            await asyncio.to_thread(socket.create_connection, address, 2)
        except OSError as exc:
            return exc
        finally:
            for sock in found:
                sock.close()
            server.close()
        return None

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        outcome = asyncio.run(scenario())
    assert isinstance(outcome, ConnectionRefusedError), outcome
    assert accepted == [1]
    assert not caplog.records  # no accept() retried on the dead socket


def test_the_drain_stops_where_the_kernel_refuses_socket_filters(monkeypatch):
    """SIGTERM is handed on (the server stops) and later connects are refused."""
    monkeypatch.setattr(listener, "stop_accepting", lambda sock: False)
    handed_on = threading.Event()

    async def scenario() -> BaseException | None:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        previous = signal.signal(signal.SIGTERM, lambda *_: handed_on.set())
        try:
            drain = SigtermDrain("test", InFlight(), timeout_seconds=5, quiet_seconds=0)
            drain.install()
            signal.raise_signal(signal.SIGTERM)
            while not handed_on.is_set():
                await asyncio.sleep(0.02)
            try:
                await asyncio.to_thread(socket.create_connection, address, 2)
            except OSError as exc:
                return exc
            return None
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.close()

    outcome = asyncio.run(scenario())
    assert handed_on.is_set()
    assert isinstance(outcome, ConnectionRefusedError), outcome


def test_a_bentoml_worker_closes_only_the_socket_its_command_line_names(server, monkeypatch):
    """Each worker inherits every service's socket; ``--fd N`` names the one it serves."""
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(4)
    try:
        monkeypatch.setattr(
            sys, "argv", ["worker", "--fd", str(server.fileno()), "--worker-id", "1"]
        )
        found = listener.listening_sockets()
        assert [sock.getsockname() for sock in found] == [server.getsockname()]
        for sock in found:
            sock.close()
    finally:
        other.close()
