"""Read the transcript out of whatever an ASR session returns for one sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TEXT_KEYS = ("text", "hyp")


def output_text(output: Any) -> str:
    """Return the best transcript of one sample's session output.

    Accepts a recipe ``output_fn`` mapping (``text`` or ``hyp`` key), a plain
    string, or a ``Speech2Text`` n-best list of ``(text, token, token_int, hyp)``.

    Raises:
        TypeError: If the output has none of these shapes.
    """
    if isinstance(output, str):
        return output
    if isinstance(output, Mapping):
        for key in TEXT_KEYS:
            if isinstance(output.get(key), str):
                return output[key]
    if isinstance(output, Sequence) and output:
        best = output[0]
        if isinstance(best, Sequence) and best and isinstance(best[0], str):
            return best[0]
    raise TypeError(f"Cannot find a transcript in a {type(output).__name__} output.")
