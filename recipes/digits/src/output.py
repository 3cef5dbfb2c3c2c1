"""Recipe output function of the digits model: the best hypothesis as text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _best_text(nbest: Sequence[Sequence[Any]]) -> str:
    """The text of the best hypothesis of a ``Speech2Text`` n-best list ('' if empty)."""
    return str(nbest[0][0]) if nbest else ""


def output_fn(*, data: Any, model_output: Any, idx: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """Turn ``Speech2Text`` output into ``{"uttid": ..., "text": ...}``.

    Args:
        data: The sample (or, batched, the list of samples); unused.
        model_output: An n-best list ``[(text, token, token_int, hyp), ...]``,
            or, batched, one such list per sample.
        idx: The sample id, or, batched, the list of ids.

    Returns:
        dict[str, Any] | list[dict[str, Any]]: One result, or one per sample
        when ``idx`` is a list.
    """
    del data
    if isinstance(idx, list):
        return [
            {"uttid": uttid, "text": _best_text(nbest)}
            for uttid, nbest in zip(idx, model_output, strict=True)
        ]
    return {"uttid": idx, "text": _best_text(model_output)}
