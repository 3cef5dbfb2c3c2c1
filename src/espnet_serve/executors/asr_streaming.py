"""``espnet2.bin.asr_inference_streaming.Speech2TextStreaming``: whole utterances, or streams.

An upload's segment is one final chunk (``is_final=True``): the contextual-block encoder
and the blockwise synchronous beam search run over it as espnet2's own
``asr_inference_streaming`` does without ``--sim_chunk_length``. The class keeps
its streaming state on the object, so clips are decoded one at a time.

A realtime session's utterance is a :class:`BlockStream`: chunks as they arrive
(``is_final=False``), each returning the best hypothesis so far, then a final chunk.
Each stream has an object of its own that shares the model's weights.
"""

from __future__ import annotations

import copy
import itertools
from functools import cached_property
from typing import Any

import numpy as np

from espnet_serve.executors.base import Executor, Hypothesis, read_common

SPEECH2TEXT_STREAMING = "espnet2.bin.asr_inference_streaming.Speech2TextStreaming"
BLANK_ID = 0  # espnet2's CTC blank, which Speech2TextStreaming drops from hypotheses too


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

    def open_stream(self) -> BlockStream:
        """A new stream, decoded block by block."""
        return BlockStream(self, copy.deepcopy(self._template, self._shared()))

    @cached_property
    def _template(self) -> Any:
        """A copy of the backend that never decodes: what every stream is copied from.

        Copied once, before any stream runs, so that no copy is taken of an object whose
        state another thread is changing.
        """
        template = copy.deepcopy(self.backend, self._shared())
        template.reset()
        return template

    def _shared(self) -> dict[int, Any]:
        """A deep-copy memo that keeps the weights, buffers, tokenizer and converter shared."""
        backend = self.backend
        model = backend.asr_model
        kept = [*itertools.chain(model.parameters(), model.buffers())]
        kept += [backend.tokenizer, backend.converter]
        return {id(obj): obj for obj in kept if obj is not None}


class BlockStream:
    """One utterance decoded as its audio arrives, by a ``Speech2TextStreaming`` of its own.

    Not thread-safe: one caller at a time, chunks in order.

    Args:
        executor: The model's executor (reads outputs, drops special symbols).
        backend: This stream's ``Speech2TextStreaming`` (weights shared with the model's).
    """

    def __init__(self, executor: AsrStreamingExecutor, backend: Any) -> None:
        self.executor = executor
        self.backend = backend

    def push(self, samples: np.ndarray, *, final: bool) -> Hypothesis:
        """Decode the next chunk; the best hypothesis so far (``final``: the transcript).

        A non-final chunk's hypothesis is what espnet2 returns for it: the hypothesis that
        ended (``<sos/eos>``) in the last block, whose search then stopped to wait for
        more audio. Where no hypothesis ended, it is the search's best running one. A
        final chunk decodes what is left and ends the stream, as espnet2's
        ``asr_inference_streaming`` ends an utterance.
        """
        output = self.backend(np.asarray(samples, dtype=np.float32), is_final=final)
        hypothesis = self.executor.read(output) if final or output else self._best_running()
        return self.executor.without_special_symbols(hypothesis)

    def _best_running(self) -> Hypothesis:
        """The search's best running hypothesis."""
        hyps = self.backend.beam_search.running_hyps
        if hyps is None or hyps.yseq.shape[0] == 0:
            return Hypothesis("", ())
        eos = self.backend.beam_search.eos
        ids = [
            int(token)
            for token in hyps.yseq[0, 1 : int(hyps.length[0])].tolist()
            if token not in (BLANK_ID, eos)
        ]
        tokens = self.backend.converter.ids2tokens(ids)
        tokenizer = self.backend.tokenizer
        text = tokenizer.tokens2text(tokens) if tokenizer is not None else " ".join(tokens)
        return Hypothesis(text, tuple(ids))
