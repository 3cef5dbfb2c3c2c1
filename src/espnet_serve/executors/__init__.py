"""One executor per family of espnet2 inference classes, chosen by the bundle's ``_target_``.

Import records a bundle's family (:func:`family_of`) in its ``ModelSpec``; the
model service builds the session and wraps it in :func:`executor_for` 's
executor. Adding a family is one module here, added to :data:`EXECUTORS`.
"""

from __future__ import annotations

from typing import Any

from espnet_serve.executors.asr import AsrExecutor
from espnet_serve.executors.asr_streaming import AsrStreamingExecutor
from espnet_serve.executors.asr_transducer import AsrTransducerExecutor
from espnet_serve.executors.base import DecodeOptions, Executor, FamilyExecutor, Hypothesis
from espnet_serve.executors.enh import EnhExecutor
from espnet_serve.executors.s2t import S2tCtcExecutor, S2tExecutor
from espnet_serve.executors.st import StExecutor
from espnet_serve.executors.tts import TtsExecutor

EXECUTORS: tuple[type[FamilyExecutor], ...] = (
    AsrExecutor,
    AsrTransducerExecutor,
    AsrStreamingExecutor,
    StExecutor,
    S2tExecutor,
    S2tCtcExecutor,
    TtsExecutor,
    EnhExecutor,
)
_BY_FAMILY = {executor.family: executor for executor in EXECUTORS}
_BY_CLASS = {name: executor for executor in EXECUTORS for name in executor.inference_classes}


class UnsupportedFamilyError(ValueError):
    """A model whose inference class no executor serves."""


def served_families() -> str:
    """The served families and their classes, in one line."""
    return "; ".join(
        f"{executor.family} ({', '.join(executor.inference_classes)})" for executor in EXECUTORS
    )


def family_of(inference_class: str) -> str | None:
    """The family of an inference config's ``_target_`` (``None``: not served)."""
    executor = _BY_CLASS.get(inference_class)
    return executor.family if executor is not None else None


def batched_class_of(inference_class: str) -> str | None:
    """The batched equivalent of an espnet2 inference class, if its family has one."""
    executor = _BY_CLASS.get(inference_class)
    return None if executor is None else executor.batched_classes.get(inference_class)


def unbatched_reason(inference_class: str) -> str:
    """Why a class is decoded one clip at a time ("" if its family is batched or unknown)."""
    executor = _BY_CLASS.get(inference_class)
    return executor.unbatched_reason if executor is not None else ""


def executor_class(family: str | None, inference_class: str = "") -> type[FamilyExecutor]:
    """The executor of a family.

    Raises:
        UnsupportedFamilyError: With one plain line naming the class and the served families.
    """
    executor = _BY_FAMILY.get(family or "")
    if executor is None:
        named = inference_class or f"family {family!r}"
        raise UnsupportedFamilyError(
            f"{named} is not a model family this server serves; it serves: {served_families()}."
        )
    return executor


def executor_for(session: Any, family: str | None = None) -> FamilyExecutor:
    """Wrap a session in its family's executor (by default, that of its backend's class).

    A backend's class is matched by its own dotted path or that of a base class
    (a recipe's subclass of ``Speech2Text`` is served as ``Speech2Text``).

    Raises:
        UnsupportedFamilyError: If no executor serves the session's backend.
    """
    if family is not None:
        return executor_class(family)(session)
    backend = type(session.model)
    names = [f"{base.__module__}.{base.__qualname__}" for base in backend.__mro__]
    found = next((family for family in map(family_of, names) if family), None)
    return executor_class(found, names[0])(session)


__all__ = [
    "EXECUTORS",
    "DecodeOptions",
    "Executor",
    "FamilyExecutor",
    "Hypothesis",
    "UnsupportedFamilyError",
    "batched_class_of",
    "executor_class",
    "executor_for",
    "family_of",
    "served_families",
    "unbatched_reason",
]
