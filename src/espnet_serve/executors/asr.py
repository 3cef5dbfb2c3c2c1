"""``espnet2.bin.asr_inference.Speech2Text``: CTC/attention, CTC-only, interCTC, LM fusion.

Also its ``decoder: transducer`` models. Batched with
:class:`espnet_serve.backends.BatchedSpeech2Text` where that is exact (espnet2's
transformer and RNN language models fused, no n-gram, no transducer decoder);
otherwise one clip at a time (the session builds the config's own class and says why).
"""

from __future__ import annotations

from typing import Any

from espnet_serve.executors.base import Executor, Hypothesis, read_common

SPEECH2TEXT = "espnet2.bin.asr_inference.Speech2Text"
BATCHED_SPEECH2TEXT = "espnet_serve.backends.BatchedSpeech2Text"
# Where the class is defined (what a built backend's type says).
BATCHED_SPEECH2TEXT_MODULE = "espnet_serve.backends.speech2text.BatchedSpeech2Text"


class AsrExecutor(Executor):
    """espnet2's ASR ``Speech2Text`` (and ``BatchedSpeech2Text``, its batched equivalent)."""

    family = "asr"
    inference_classes = (SPEECH2TEXT, BATCHED_SPEECH2TEXT, BATCHED_SPEECH2TEXT_MODULE)
    batched_classes = {SPEECH2TEXT: BATCHED_SPEECH2TEXT}

    def read(self, output: Any) -> Hypothesis:
        """An n-best list, or ``(n-best, intermediate CTC texts)`` for an interCTC model."""
        if is_interctc_output(output):
            output = output[0]
        return read_common(output)

    def min_samples(self) -> int:
        """The batched backend's, else found on the model's front end and subsampling."""
        known = getattr(self.backend, "min_samples", None)
        if known is not None:
            return int(known)
        from espnet_serve.backends.encoding import min_input_samples

        return min_input_samples(self.backend.asr_model)

    def ctc_backend(self) -> Any | None:
        """The backend itself: its ``asr_model.ctc``, ``tokenizer`` and ``converter``."""
        return self.backend


def is_interctc_output(output: Any) -> bool:
    """Whether ``output`` is an interCTC model's ``(n-best, {layer: tokens})``."""
    return (
        isinstance(output, tuple)
        and len(output) == 2
        and isinstance(output[0], list)
        and isinstance(output[1], dict | None)
    )
