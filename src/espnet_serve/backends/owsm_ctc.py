"""OWSM-CTC's classes with one padded encoder pass per bucket of clips.

``espnet2.bin.s2t_inference_ctc``'s ``Speech2Text`` (CTC beam search) and
``Speech2TextGreedySearch``: the clips of a length bucket, each with its own language,
task and previous text, are encoded together exactly as alone
(:func:`espnet_serve.backends.encoding.encode_padded_prompted`, checked on the model when
it is built); then each clip goes through the class's own ``__call__`` with its rows of
that output in place of its encoder pass, so the search and the output are espnet2's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from espnet2.bin.s2t_inference_ctc import Speech2Text, Speech2TextGreedySearch

from espnet_serve.backends.bucketing import per_clip
from espnet_serve.backends.encoding import (
    PADDING_TOLERANCE,
    encode_padded_prompted,
    encode_returns,
    min_input_samples,
    padding_mismatch,
)
from espnet_serve.backends.offline import block_runtime_downloads
from espnet_serve.backends.sample_errors import UnbatchableModelError, decode_in_buckets
from espnet_serve.backends.waveform import checked_features

NO_PROMPT = "<na>"  # the classes' default text_prev
# One clip's options, as the classes take them: text_prev, lang_sym, task_sym.
Options = tuple[Any, Any, Any]


class _BatchedOwsmCtc:
    """What both batched classes add to their espnet2 class (listed first in their bases).

    Args:
        max_bucket_size: Most clips per encoder pass.
        max_bucket_samples: Most padded samples per pass (``None``: no bound).
        *args: The espnet2 class's.
        **kwargs: The espnet2 class's.

    Raises:
        UnbatchableModelError: If a padded batch changes the encoder's output.
    """

    s2t_model: Any
    converter: Any
    tokenizer: Any
    device: str
    lang_sym: str
    task_sym: str

    def __init__(
        self,
        *args: Any,
        max_bucket_size: int = 16,
        max_bucket_samples: int | None = None,
        **kwargs: Any,
    ) -> None:
        block_runtime_downloads()
        super().__init__(*args, **kwargs)  # the espnet2 class's
        if max_bucket_size < 1:
            raise ValueError(f"max_bucket_size must be at least 1, got {max_bucket_size}.")
        self.max_bucket_size = max_bucket_size
        self.max_bucket_samples = max_bucket_samples
        self._kept: dict[int, torch.Tensor] | None = None
        with torch.inference_mode():
            self.min_samples = min_input_samples(self.s2t_model)
            mismatch = padding_mismatch(self.s2t_model, self.min_samples, self._check_encode)
        if not mismatch <= PADDING_TOLERANCE:
            raise UnbatchableModelError(
                f"A padded batch changes this model's encoder output "
                f"({type(self.s2t_model.encoder).__name__}: by {mismatch:.2g} of its magnitude)."
            )

    @contextlib.contextmanager
    def keep_encoder_output(self) -> Iterator[dict[int, torch.Tensor]]:
        """Within: each decoded clip's encoder output ``(frames, dim)``, by ``id(waveform)``.

        What its espnet2 class decoded, the prefix frames included.
        """
        kept: dict[int, torch.Tensor] = {}
        self._kept = kept
        try:
            yield kept
        finally:
            self._kept = None

    def _check_encode(self, model: Any, feats: Sequence[torch.Tensor]) -> tuple:
        """The padding check's encoder pass: the default language and task, no prompt."""
        prompts = [self._prompt(NO_PROMPT, None, None) for _ in feats]
        out, lengths = self._encode(list(feats), prompts)
        return (out[0] if isinstance(out, tuple) else out), lengths

    def __call__(
        self,
        speech: Any,
        text_prev: Any = NO_PROMPT,
        lang_sym: Any = None,
        task_sym: Any = None,
    ) -> Any:
        """Decode one clip (the espnet2 class's call), or a list of them.

        Args:
            speech: A waveform, or a list of them.
            text_prev: Previous text, per clip for a list (a list of strings).
            lang_sym: Language token (``None``: the configured one), per clip for a list.
            task_sym: Task token (``None``: the configured one), per clip for a list.

        Returns:
            For one waveform, what the class returns; for a list, one such output or
            :class:`SampleError` per clip, in input order.
        """
        if not isinstance(speech, list | tuple):
            return super().__call__(speech, text_prev, lang_sym, task_sym)  # type: ignore[misc]
        count = len(speech)
        options = list(
            zip(
                *(per_clip(value, count) for value in (text_prev, lang_sym, task_sym)),
                strict=True,
            )
        )
        return self.batch(list(speech), options)

    @torch.inference_mode()
    def batch(self, samples: list[Any], options: list[Options]) -> list[Any]:
        """Decode clips, each with its own options (see :meth:`__call__`)."""
        return decode_in_buckets(
            samples,
            lambda index, sample: checked_features(
                self.s2t_model, index, sample, self.min_samples, self.device
            ),
            lambda part, feats: self._decode(
                feats, [options[i] for i in part], [id(samples[i]) for i in part]
            ),
            self.max_bucket_size,
            self.max_bucket_samples,
        )

    def _prompt(self, text_prev: Any, lang_sym: Any, task_sym: Any) -> tuple[torch.Tensor, list]:
        """A clip's prompt ids and ``[lang, task]`` prefix, as the class's call makes them."""
        lang_id = self.converter.token2id[lang_sym if lang_sym is not None else self.lang_sym]
        task_id = self.converter.token2id[task_sym if task_sym is not None else self.task_sym]
        if isinstance(text_prev, str):
            ids = self.converter.tokens2ids(self.tokenizer.text2tokens(text_prev))
        else:
            ids = text_prev.tolist()
        if self.s2t_model.na in ids:
            ids = [self.s2t_model.na]
        return torch.tensor(ids, dtype=torch.long), [lang_id, task_id]

    def _encode(
        self, feats: list[torch.Tensor], prompts: list[tuple[torch.Tensor, list]]
    ) -> tuple[Any, torch.Tensor]:
        prefix = torch.tensor([prefix for _, prefix in prompts], dtype=torch.long)
        return encode_padded_prompted(self.s2t_model, feats, [ids for ids, _ in prompts], prefix)

    def _decode(
        self, feats: list[torch.Tensor], options: list[Options], keys: list[int]
    ) -> list[Any]:
        """One padded encoder pass; then the class's ``__call__`` on each clip's rows of it."""
        out, lengths = self._encode(feats, [self._prompt(*option) for option in options])
        if self._kept is not None:
            main = out[0] if isinstance(out, tuple) else out
            for row, key in enumerate(keys):
                self._kept[key] = main[row, : int(lengths[row])]
        outputs = []
        for row, option in enumerate(options):
            with encode_returns(self.s2t_model, _rows(out, lengths, row)):
                outputs.append(super().__call__(torch.zeros(1), *option))  # type: ignore[misc]
        return outputs


def _rows(out: Any, lengths: torch.Tensor, row: int) -> Callable[..., tuple]:
    """``ESPnetS2TCTCModel.encode`` answering with one clip's rows of a batched pass."""
    length = lengths[row : row + 1]
    frames = int(length[0])
    if isinstance(out, tuple):  # (output, [(layer, intermediate output)])
        encoded: Any = (
            out[0][row : row + 1, :frames],
            [(layer, inter[row : row + 1, :frames]) for layer, inter in out[1]],
        )
    else:
        encoded = out[row : row + 1, :frames]

    def encode(*args: Any, **kwargs: Any) -> tuple:
        return encoded, length

    return encode


class BatchedOwsmCtcSpeech2Text(_BatchedOwsmCtc, Speech2Text):
    """``s2t_inference_ctc.Speech2Text`` (CTC beam search), many clips per call.

    Args: as :class:`_BatchedOwsmCtc`.
    """


class BatchedOwsmCtcGreedySearch(_BatchedOwsmCtc, Speech2TextGreedySearch):
    """``s2t_inference_ctc.Speech2TextGreedySearch``, many clips per call.

    Args: as :class:`_BatchedOwsmCtc`.
    """
