"""HTTP clients of a served Bento: readiness, held-out transcripts, a steady request stream."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from espnet_serve.assets import HeldoutClip, load_heldout

READY_PATH = "/readyz"
TRANSCRIBE_PATH = "/transcribe"


def wait_ready(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> float:
    """Poll ``url``/readyz until it answers 200; the monotonic time it did.

    Raises:
        TimeoutError: If it is not ready within ``timeout`` seconds or ``alive()`` turns false.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(url + READY_PATH, timeout=5).status_code == 200:
                return time.monotonic()
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready within {timeout:.0f} s")


def transcribe(client: httpx.Client, url: str, clip: HeldoutClip) -> str:
    """The transcript of one clip (raises on any non-200 answer)."""
    with clip.path.open("rb") as audio:
        response = client.post(url + TRANSCRIBE_PATH, files={"file": (clip.path.name, audio)})
    response.raise_for_status()
    return response.json()["text"]


def heldout_transcripts(url: str, limit: int | None = None) -> dict[str, str]:
    """Transcripts (by uttid) of every held-out clip (or the first ``limit``), one at a time."""
    with httpx.Client(timeout=60) as client:
        return {clip.uttid: transcribe(client, url, clip) for clip in load_heldout(limit)}


class NoTarget(Exception):
    """No server to send a request to (no ready endpoint)."""


@dataclass
class RequestStream:
    """Clients that keep sending held-out clips until stopped, and what they got.

    ``target()`` names the base URL of each request (e.g. one of the ready endpoints of a
    Service, as kube-proxy picks them). Every request is counted once: ``answered`` (200 and the
    expected transcript of the reference run), ``wrong`` (200, another text) or ``lost``
    (anything else: an error status, a reset or refused connection, a timeout, no target), with
    the reason.
    """

    target: Callable[[], str]
    expected: dict[str, str]
    clients: int = 4
    sent: int = 0
    answered: int = 0
    wrong: int = 0
    lost: Counter = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> RequestStream:
        """Start the client threads."""
        clips = [c for c in load_heldout() if c.uttid in self.expected]
        for i in range(self.clients):
            thread = threading.Thread(target=self._run, args=(clips[i :: self.clients],))
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> dict[str, object]:
        """Stop the clients (each finishes its request in flight); the counts."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return {
            "sent": self.sent,
            "answered": self.answered,
            "wrong": self.wrong,
            "lost": sum(self.lost.values()),
            "lost_reasons": dict(self.lost),
        }

    def _run(self, clips: list[HeldoutClip]) -> None:
        with httpx.Client(timeout=60) as client:
            i = 0
            while not self._stop.is_set():
                clip = clips[i % len(clips)]
                i += 1
                outcome = self._one(client, clip)
                with self._lock:
                    self.sent += 1
                    if outcome == "answered":
                        self.answered += 1
                    elif outcome == "wrong":
                        self.wrong += 1
                    else:
                        self.lost[outcome] += 1

    def _one(self, client: httpx.Client, clip: HeldoutClip) -> str:
        try:
            text = transcribe(client, self.target(), clip)
        except NoTarget:
            return "no ready endpoint"
        except httpx.HTTPStatusError as err:
            return f"HTTP {err.response.status_code}"
        except httpx.HTTPError as err:
            return type(err).__name__
        return "answered" if text == self.expected[clip.uttid] else "wrong"
