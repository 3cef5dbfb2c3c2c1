"""Fake backends for testing InferenceSession's control flow (never its only test)."""

from __future__ import annotations

from typing import Any


class RecordingBackend:
    """Records its constructor kwargs and echoes inputs; rejects lists unless told to batch."""

    def __init__(self, device: str = "unset", batchable: bool = False, **options: Any) -> None:
        self.device = device
        self.batchable = batchable
        self.options = options
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **inputs: Any) -> Any:
        self.calls.append(inputs)
        (value, *_) = inputs.values()
        if isinstance(value, list):
            if not self.batchable:
                raise TypeError("RecordingBackend takes one sample per call")
            return [f"out:{v}" for v in value]
        return f"out:{value}"


class NoDeviceBackend:
    """A backend whose constructor takes no device."""

    def __init__(self, size: int = 1) -> None:
        self.size = size


class TwoInputBackend:
    """Joins two named inputs."""

    def __call__(self, *, speech: Any, text: Any) -> Any:
        if isinstance(speech, list):
            return [f"{s}|{t}" for s, t in zip(speech, text, strict=True)]
        return f"{speech}|{text}"


class SlotErrorBackend:
    """Batches lists, but reports a ``ValueError`` in the slot of each ``"bad"`` sample."""

    def __call__(self, *, speech: Any) -> Any:
        if not isinstance(speech, list):
            if speech == "bad":
                raise ValueError("cannot decode 'bad'")
            return f"out:{speech}"
        return [ValueError(f"cannot decode {s!r}") if s == "bad" else f"out:{s}" for s in speech]
