"""The listening-socket door of the SIGTERM drain, on real loopback sockets.

Stopped: open connections carry on, a new one does not complete, and once the socket is
closed it is refused at connect (not reset after sending). Resumed: connections complete
again. The accept queue is counted. A worker finds its listening sockets by itself.
"""

from __future__ import annotations

import socket
import sys
import threading

import pytest

from espnet_serve.serving import listener

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
