"""``espnet2.bin.st_inference.Speech2Text``: speech translation (speech in, another language out).

It translates only (task ``translate``, ``/v1/audio/translations``): its decoder writes the
target language. The n-best list has ASR's shape (``(text, token, token_int, hyp)``); a
multi-decoder model returns ``(n-best, ASR n-best)``. No word times: a translation's words
are not aligned with the speech. Batched with
:class:`espnet_serve.backends.st.BatchedStSpeech2Text` (one padded encoder pass per bucket,
espnet2's search per clip) where that is exact; else one clip at a time.
"""

from __future__ import annotations

from typing import Any

from espnet_serve.executors.base import TRANSLATE, Executor, Hypothesis, read_common

ST_SPEECH2TEXT = "espnet2.bin.st_inference.Speech2Text"
BATCHED_ST = "espnet_serve.backends.st.BatchedStSpeech2Text"


class StExecutor(Executor):
    """espnet2's ``st_inference.Speech2Text``."""

    family = "st"
    tasks = (TRANSLATE,)
    inference_classes = (ST_SPEECH2TEXT, BATCHED_ST)
    batched_classes = {ST_SPEECH2TEXT: BATCHED_ST}

    def read(self, output: Any) -> Hypothesis:
        """The translation n-best list (of ``(n-best, ASR n-best)`` for a multi-decoder model)."""
        if isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], list):
            output = output[0]
        return read_common(output)

    def min_samples(self) -> int:
        """Found on the model's front end and the encoder's subsampling."""
        from espnet_serve.backends.encoding import min_input_samples

        return min_input_samples(self.backend.st_model)
