"""The worker's listening TCP sockets: find them, stop and resume completing new connections.

BentoML's arbiter creates each service's listening socket and hands it to every worker; it
closes it only once all of them have exited. A connection that completes its handshake after
the last worker stopped accepting waits in the socket's queue and is reset when the arbiter
closes it: the client has sent its request and gets no answer. :func:`stop_accepting` attaches
a socket filter that drops new connection requests (TCP SYNs) and nothing else: connections
already open or queued carry on, a new client's SYN goes unanswered and is sent again, and
once the socket is closed the client is refused at connect, before it has sent anything.

Some kernels refuse socket filters to unprivileged processes (measured: this project's 6.18
VM kernel, ``kernel.unprivileged_bpf_disabled = 2``, EPERM for any non-root user and in a
rootful container, while the chart runs as uid 1034). There :func:`stop_accepting` says so,
and the caller falls back to :func:`refuse_connections` once the accept queue is empty: new
connections are then refused at once, and only one that completes in the instant between
the check and the shutdown is reset. Linux only (elsewhere nothing is found and nothing
changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import stat
import struct
import sys

_SO_ATTACH_FILTER = 26
_SO_DETACH_FILTER = 27
_TCP_INFO_SIZE = 104
_TCP_INFO_UNACKED_OFFSET = 24  # tcpi_unacked: a listening socket's accept-queue length


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


# Classic BPF on the TCP header: drop a segment whose flags are SYN without ACK, keep the rest.
_DROP_SYN = (_SockFilter * 5)(
    _SockFilter(0x30, 0, 0, 13),  # ldb [13]: the flags byte
    _SockFilter(0x54, 0, 0, 0x12),  # and #(SYN | ACK)
    _SockFilter(0x15, 0, 1, 0x02),  # jeq #SYN: next, else skip one
    _SockFilter(0x06, 0, 0, 0),  # ret #0: drop
    _SockFilter(0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep
)
_DROP_SYN_PROG = _SockFprog(len(_DROP_SYN), ctypes.cast(_DROP_SYN, ctypes.POINTER(_SockFilter)))


def listening_sockets() -> list[socket.socket]:
    """The listening TCP sockets this worker serves on (duplicates: close them when done).

    A BentoML worker inherits every service's listening socket from the arbiter and
    serves on the one its command line names (``--fd N``, a required option of
    ``_bentoml_impl.worker.service``): only that one is returned, so that a model
    worker that drains first never closes the API's door. A process started otherwise
    gets all of its listening sockets.
    """
    if sys.platform != "linux":
        return []
    served = _served_descriptors()
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if served is not None and fd not in served:
            continue
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        if (
            sock.family in (socket.AF_INET, socket.AF_INET6)
            and sock.type == socket.SOCK_STREAM
            and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        ):
            found.append(sock)
        else:
            sock.close()
    return found


def _served_descriptors() -> set[int] | None:
    """The descriptors named by ``--fd`` on this process's command line, if any."""
    args = sys.argv
    named = {args[i + 1] for i in range(len(args) - 1) if args[i] == "--fd"}
    named |= {arg.removeprefix("--fd=") for arg in args if arg.startswith("--fd=")}
    descriptors = {int(value) for value in named if value.isdigit()}
    return descriptors or None


def stop_accepting(sock: socket.socket) -> bool:
    """Let no new connection complete on ``sock`` (its new SYNs are dropped).

    Returns:
        bool: False when the kernel refuses this process a socket filter (nothing changed).
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(memoryview(_DROP_SYN_PROG)))
    except PermissionError:
        return False
    return True


def refuse_connections(sock: socket.socket) -> None:
    """Stop ``sock`` listening at once, for every process sharing it (``shutdown``).

    New connections are refused at connect; any still in the accept queue are reset, so
    call it when :func:`queued_connections` is 0. The running event loop stops watching
    this process's other descriptors of the socket first: a shut-down listening socket
    is always readable and ``accept`` fails on it, which the loop would retry and log
    without end.
    """
    loop = asyncio.get_running_loop()
    inode = os.fstat(sock.fileno()).st_ino
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            if fd != sock.fileno() and os.fstat(fd).st_ino == inode:
                loop.remove_reader(fd)
    with contextlib.suppress(OSError):  # already shut down
        sock.shutdown(socket.SHUT_RDWR)


def resume_accepting(sock: socket.socket) -> None:
    """Undo :func:`stop_accepting` (nothing to undo is fine)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)


def queued_connections(sock: socket.socket) -> int:
    """Connections completed on listening ``sock`` that no one has accepted yet."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    return struct.unpack_from("I", info, _TCP_INFO_UNACKED_OFFSET)[0]
