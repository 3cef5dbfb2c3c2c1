"""``espnet2.bin.asr_transducer_inference.Speech2Text``: the espnet2.asr_transducer models.

Its ``__call__`` returns the n-best ``Hypothesis`` objects, not text: the text
and token ids are the class's own ``hypotheses_to_results``. These models have
no CTC head at inference (an auxiliary CTC is a training loss), so they give no
word times. Clips are decoded one at a time (the beam search takes one utterance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from espnet_serve.executors.base import Executor, Hypothesis, read_common

TRANSDUCER_SPEECH2TEXT = "espnet2.bin.asr_transducer_inference.Speech2Text"


class AsrTransducerExecutor(Executor):
    """espnet2's ``asr_transducer_inference.Speech2Text``."""

    family = "asr_transducer"
    inference_classes = (TRANSDUCER_SPEECH2TEXT,)
    unbatched_reason = "espnet2's transducer beam search decodes one utterance at a time"

    def read(self, output: Any) -> Hypothesis:
        """The class's n-best hypotheses, formatted by its ``hypotheses_to_results``."""
        if _is_hypothesis_list(output):
            output = self.backend.hypotheses_to_results(output)
        return read_common(output)

    def min_samples(self) -> int:
        """Found on the model's front end and the encoder's subsampling check."""
        from espnet2.asr_transducer.utils import check_short_utt

        from espnet_serve.backends.encoding import min_input_samples

        factor = int(self.backend.asr_model.encoder.embed.subsampling_factor)

        def too_short(_: Any, frames: int) -> int | None:
            short, limit = check_short_utt(factor, frames)
            return int(limit) if short else None

        return min_input_samples(self.backend.asr_model, too_short=too_short)


def _is_hypothesis_list(output: Any) -> bool:
    return (
        isinstance(output, Sequence)
        and bool(output)
        and all(hasattr(item, "yseq") and hasattr(item, "score") for item in output)
    )
