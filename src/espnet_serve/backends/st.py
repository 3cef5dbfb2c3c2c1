"""``BatchedStSpeech2Text``: speech translation's ``Speech2Text`` with one padded encoder pass.

The clips of a length bucket are encoded together, exactly as alone (the padding fixes
of :mod:`espnet_serve.backends.encoding`, checked on the model when it is built); then
each clip goes through espnet2's own ``st_inference.Speech2Text.__call__`` with its row
of that output in place of its encoder pass, so the search and the n-best list are the
class's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from espnet2.bin.st_inference import Speech2Text

from espnet_serve.backends.encoding import (
    PADDING_TOLERANCE,
    encode_padded_layers,
    encode_returns,
    min_input_samples,
    padding_mismatch,
)
from espnet_serve.backends.offline import block_runtime_downloads
from espnet_serve.backends.sample_errors import UnbatchableModelError, decode_in_buckets
from espnet_serve.backends.waveform import checked_features


class BatchedStSpeech2Text(Speech2Text):
    """Speech translation, many clips per call.

    Built with ``st_inference.Speech2Text``'s options (it can be an inference config's
    ``model._target_``). A call with one waveform is ``Speech2Text``'s call; a call with
    a list returns one n-best list, or a :class:`SampleError`, per clip, in order.

    Args:
        max_bucket_size: Most clips per encoder pass.
        max_bucket_samples: Most padded samples per pass (``size x longest``; ``None``:
            no bound).
        *args: ``Speech2Text``'s.
        **kwargs: ``Speech2Text``'s.

    Raises:
        UnbatchableModelError: For a multi-decoder, hierarchical-encoder or transducer
            model, greedy CTC decoding, or an encoder a padded batch changes: the
            session then decodes with ``Speech2Text`` one clip at a time.
    """

    def __init__(
        self,
        *args: Any,
        max_bucket_size: int = 16,
        max_bucket_samples: int | None = None,
        **kwargs: Any,
    ) -> None:
        block_runtime_downloads()
        if max_bucket_size < 1:
            raise ValueError(f"max_bucket_size must be at least 1, got {max_bucket_size}.")
        super().__init__(*args, **kwargs)
        self.max_bucket_size = max_bucket_size
        self.max_bucket_samples = max_bucket_samples
        model = self.st_model
        refused = [
            name
            for name, present in (
                ("a multi-decoder", model.use_multidecoder),
                ("a hierarchical encoder", model.hier_encoder is not None),
                ("a transducer decoder", model.st_use_transducer_decoder),
                ("greedy CTC decoding", self.ctc_greedy),
            )
            if present
        ]
        if refused:
            raise UnbatchableModelError(
                f"BatchedStSpeech2Text does not batch {', '.join(refused)}."
            )
        with torch.inference_mode():
            self.min_samples = min_input_samples(model)
            mismatch = padding_mismatch(model, self.min_samples)
        if not mismatch <= PADDING_TOLERANCE:
            raise UnbatchableModelError(
                f"A padded batch changes this model's encoder output "
                f"({type(model.encoder).__name__}: by {mismatch:.2g} of its magnitude)."
            )

    def __call__(self, speech: Any) -> Any:  # type: ignore[override]
        """Translate one waveform (``Speech2Text``'s call), or a list of them."""
        if isinstance(speech, list | tuple):
            return self.batch(list(speech))
        return super().__call__(speech)

    @torch.inference_mode()
    def batch(self, samples: list[Any]) -> list[Any]:
        """Translate a list of waveforms (see :meth:`__call__`)."""
        return decode_in_buckets(
            samples,
            lambda index, sample: checked_features(
                self.st_model, index, sample, self.min_samples, self.device
            ),
            lambda part, feats: self._decode(feats),
            self.max_bucket_size,
            self.max_bucket_samples,
        )

    def _decode(self, feats: list[torch.Tensor]) -> list[Any]:
        """One padded encoder pass; then ``Speech2Text.__call__`` on each row of it."""
        enc, lengths, _ = encode_padded_layers(self.st_model, feats)
        outputs = []
        for row in range(len(feats)):
            length = lengths[row : row + 1]
            with encode_returns(self.st_model, _rows(enc[row : row + 1, : int(length[0])], length)):
                outputs.append(super().__call__(torch.zeros(1)))
        return outputs


def _rows(encoded: torch.Tensor, lengths: torch.Tensor) -> Callable[..., tuple]:
    """``ESPnetSTModel.encode`` answering with one clip's rows of a batched pass."""

    def encode(*args: Any, return_int_enc: bool = False, **kwargs: Any) -> tuple:
        return (encoded, lengths, encoded, lengths) if return_int_enc else (encoded, lengths)

    return encode
