"""``espnet2.bin.asr_inference_streaming.Speech2TextStreaming``, on whole utterances.

Each clip is one final chunk (``is_final=True``): the contextual-block encoder
and the blockwise synchronous beam search run over it as espnet2's own
``asr_inference_streaming`` does without ``--sim_chunk_length``. The class keeps
its streaming state on the object, so clips are decoded one at a time.
"""

from __future__ import annotations

from typing import Any

from espnet_serve.executors.base import Executor, Hypothesis, read_common

SPEECH2TEXT_STREAMING = "espnet2.bin.asr_inference_streaming.Speech2TextStreaming"


class AsrStreamingExecutor(Executor):
    """espnet2's ``Speech2TextStreaming`` (contextual-block conformer/transformer)."""

    family = "asr_streaming"
    inference_classes = (SPEECH2TEXT_STREAMING,)
    unbatched_reason = (
        "Speech2TextStreaming keeps its encoder and search state on the object, one stream at "
        "a time"
    )

    def read(self, output: Any) -> Hypothesis:
        """An n-best list; an empty one (no frame reached the encoder) is an empty transcript."""
        if isinstance(output, list) and not output:
            return Hypothesis("", ())
        return read_common(output)

    def min_samples(self) -> int:
        """Found on the model's front end and the encoder's subsampling."""
        from espnet_serve.backends.encoding import min_input_samples

        return min_input_samples(self.backend.asr_model)

    def ctc_backend(self) -> Any | None:
        """The backend: its ``asr_model.ctc``, ``tokenizer`` and ``converter``."""
        return self.backend
