"""The realtime streams a model worker decodes block by block (a streaming model's sessions).

Each stream is one utterance of a realtime session, opened by its first chunk and ended by its
final one (or by its session: :meth:`OpenStreams.close`). A stream's state lives in this
worker, in its own ``Speech2TextStreaming`` (:class:`~espnet_serve.executors.asr_streaming.
BlockStream`). The number of streams and their idle time are bounded, so sessions that vanish
leave nothing behind for long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from espnet_serve.executors.asr_streaming import BlockStream
from espnet_serve.pipeline.types import DECODE_FAILED
from espnet_serve.serving.rpc import SegmentFailure, StreamChunk, StreamText


@dataclass
class _Entry:
    """One open stream: made on its first chunk, under its own lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stream: BlockStream | None = None
    used: float = field(default_factory=time.monotonic)


class OpenStreams:
    """Streams by id, opened on their first chunk.

    Args:
        open_stream: Makes a new stream.
        limit: Most streams open at once (a chunk of another is refused).
        idle_seconds: A stream with no chunk this long is dropped.
    """

    def __init__(
        self, open_stream: Callable[[], BlockStream], *, limit: int, idle_seconds: float
    ) -> None:
        self._open_stream = open_stream
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def push(self, chunk: StreamChunk) -> StreamText:
        """Decode ``chunk`` on its stream; the text so far (the transcript when final)."""
        entry = self._entry(chunk.stream_id)
        if entry is None:
            message = f"This model worker decodes at most {self.limit} streams at once."
            return StreamText(failure=SegmentFailure(code="overloaded", message=message))
        with entry.lock:
            try:
                if entry.stream is None:
                    entry.stream = self._open_stream()
                hypothesis = entry.stream.push(chunk.samples, final=chunk.final)
            except Exception as exc:
                self.close(chunk.stream_id)
                message = f"Streaming decode failed: {type(exc).__name__}: {exc}"
                return StreamText(failure=SegmentFailure(code=DECODE_FAILED, message=message))
        if chunk.final:
            self.close(chunk.stream_id)
        return StreamText(text=hypothesis.text, final=chunk.final)

    def close(self, stream_id: str) -> None:
        """Forget a stream (nothing if it is not open)."""
        with self._lock:
            self._entries.pop(stream_id, None)

    def _entry(self, stream_id: str) -> _Entry | None:
        """The entry of ``stream_id`` (new if it is not open); None past the limit."""
        now = time.monotonic()
        with self._lock:
            for key, entry in list(self._entries.items()):
                if now - entry.used > self.idle_seconds:
                    del self._entries[key]
            entry = self._entries.get(stream_id)
            if entry is None:
                if len(self._entries) >= self.limit:
                    return None
                entry = self._entries[stream_id] = _Entry()
            entry.used = now
            return entry
