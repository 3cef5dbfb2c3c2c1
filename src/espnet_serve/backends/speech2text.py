"""``BatchedSpeech2Text``: a drop-in batched replacement for espnet2's ``Speech2Text``."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from espnet_serve.backends.beam_search import BatchJointSearch, SearchOptions, check_lm_supported
from espnet_serve.backends.encoding import (
    PADDING_TOLERANCE,
    encode_padded_layers,
    min_input_samples,
    padding_mismatch,
)
from espnet_serve.backends.greedy import greedy_ctc
from espnet_serve.backends.offline import block_runtime_downloads
from espnet_serve.backends.sample_errors import (
    SampleError,
    UnbatchableModelError,
    decode_in_buckets,
)
from espnet_serve.backends.waveform import checked_features

DECODING_MODES = ("beam", "greedy_ctc")
HALF_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

# One n-best list: [(text, tokens, token ids, Hypothesis), ...], as Speech2Text returns.
NBest = list[tuple[str | None, list[str], list[int], Any]]
# An interCTC model's output, as Speech2Text returns it: (n-best, {layer: greedy CTC tokens}).
NBestWithInterCtc = tuple[NBest, dict[int, list[str]]]
Output = NBest | NBestWithInterCtc


class BatchedSpeech2Text:
    """Speech recognition that decodes many utterances per call.

    Built from the same artifacts and options as
    ``espnet2.bin.asr_inference.Speech2Text``, so it can be the ``model._target_``
    of an inference config. A call with a list of 1-D waveforms returns one
    n-best list ``[(text, token, token_int, hyp), ...]`` per waveform, in input
    order; a call with one waveform returns its n-best list, like ``Speech2Text``.

    How: waveforms are bucketed by length (longest first, at most
    ``max_bucket_size`` per bucket); each bucket is encoded in one padded
    encoder forward (see :mod:`espnet_serve.backends.encoding`) and decoded
    together: greedy CTC, or joint CTC/attention beam search vectorised over
    utterances x beams (:mod:`espnet_serve.backends.beam_search`), with
    language-model shallow fusion, that reproduces ``Speech2Text``'s hypotheses
    and scores.

    Per-sample errors: a waveform that cannot be decoded (not a 1-D numeric
    array, empty, NaN/inf, too short for the encoder's subsampling, or failing
    alone when its bucket failed) gets a :class:`SampleError` *in its slot* of
    the returned list; the other waveforms are decoded. A single-waveform call
    raises it instead.

    Not supported (refused at construction with :class:`UnbatchableModelError`, a
    ``NotImplementedError``): n-grams, language models other than espnet2's
    transformer and RNN LMs, transducer models, attention decoders other than
    espnet2's transformer family, and the other options of ``Speech2Text``.

    One call at a time per instance: during a call, hooks on the shared
    encoder make padded batches exact (see :mod:`espnet_serve.backends.encoding`).

    Args:
        asr_train_config: espnet2 ASR training config (``config.yaml``).
        asr_model_file: Model weights.
        device: Torch device (``cpu``, ``cuda``, ``cuda:1``).
        dtype: ``float32``; or ``float16`` / ``bfloat16`` on CUDA, applied with
            autocast to the networks (search arithmetic stays float32).
        beam_size: Beam size.
        ctc_weight: CTC weight in joint decoding (1.0: CTC only).
        penalty: Length bonus per token.
        maxlenratio: Maximum output length ratio (see ``Speech2Text``).
        minlenratio: Minimum output length ratio.
        nbest: Hypotheses returned per waveform.
        normalize_length: Rank ended hypotheses by score per token.
        token_type: Token type override (default: the training config's).
        bpemodel: BPE model override (default: the training config's).
        lm_train_config: Language-model training config, for shallow fusion.
        lm_file: Language-model weights.
        ngram_file: Refused when set (no n-gram support).
        lm_weight: Language-model weight (0: the language model is not used).
        ngram_weight: Accepted for config compatibility; meaningless without an n-gram.
        decoding: ``"beam"`` (``Speech2Text``'s search, the same hypotheses) or
            ``"greedy_ctc"`` (the best CTC path: faster, and it can differ from
            ``Speech2Text``'s beam-1 CTC prefix search, so only when asked).
        max_bucket_size: Most waveforms per bucket (one padded encoder pass).
        max_bucket_samples: Most padded audio samples per bucket
            (``size x longest``), or ``None`` for no bound.
        **unsupported: Other ``Speech2Text`` options (``transducer_conf``, ``streaming``,
            ...): refused.

    Raises:
        ValueError: On an unknown ``decoding``/``dtype`` or half precision off CUDA.
        UnbatchableModelError: For the unsupported models and options above.
    """

    def __init__(
        self,
        asr_train_config: str | Path,
        asr_model_file: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        beam_size: int = 20,
        ctc_weight: float = 0.5,
        penalty: float = 0.0,
        maxlenratio: float = 0.0,
        minlenratio: float = 0.0,
        nbest: int = 1,
        normalize_length: bool = False,
        token_type: str | None = None,
        bpemodel: str | None = None,
        lm_train_config: str | Path | None = None,
        lm_file: str | Path | None = None,
        ngram_file: str | Path | None = None,
        lm_weight: float = 1.0,
        ngram_weight: float = 0.9,
        decoding: str = "beam",
        max_bucket_size: int = 16,
        max_bucket_samples: int | None = None,
        **unsupported: Any,
    ) -> None:
        block_runtime_downloads()
        from espnet2.bin.asr_inference import Speech2Text

        del ngram_weight  # only meaningful with the refused n-gram
        if unsupported:
            raise UnbatchableModelError(
                f"BatchedSpeech2Text does not implement the Speech2Text options "
                f"{', '.join(sorted(unsupported))}."
            )
        if decoding not in DECODING_MODES:
            raise ValueError(f"decoding must be one of {DECODING_MODES}, got {decoding!r}.")
        if dtype != "float32" and dtype not in HALF_DTYPES:
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}.")
        if dtype in HALF_DTYPES and not str(device).startswith("cuda"):
            raise ValueError(f"dtype={dtype} needs a CUDA device (got device={device!r}).")
        if ngram_file is not None:
            raise UnbatchableModelError(
                "BatchedSpeech2Text does not support n-gram shallow fusion (ngram_file). "
                "Remove it from the inference config, or use "
                "espnet2.bin.asr_inference.Speech2Text."
            )
        if max_bucket_size < 1:
            raise ValueError(f"max_bucket_size must be at least 1, got {max_bucket_size}.")
        reference = Speech2Text(
            asr_train_config=asr_train_config,
            asr_model_file=asr_model_file,
            lm_train_config=lm_train_config,
            lm_file=lm_file,
            lm_weight=lm_weight,
            token_type=token_type,
            bpemodel=bpemodel,
            device=device,
            beam_size=beam_size,
            ctc_weight=ctc_weight,
            penalty=penalty,
            nbest=nbest,
            normalize_length=normalize_length,
        )
        self.asr_model = reference.asr_model
        self.asr_train_args = reference.asr_train_args
        # The language model as Speech2Text fuses it (absent when lm_weight is 0).
        self.lm = reference.beam_search.full_scorers.get("lm")
        self.converter = reference.converter
        self.tokenizer = reference.tokenizer
        self.device = device
        self.dtype = dtype
        self.nbest = nbest
        self.max_bucket_size = max_bucket_size
        self.max_bucket_samples = max_bucket_samples
        self._kept: dict[int, torch.Tensor] | None = None
        self.greedy = decoding == "greedy_ctc"
        self.options = SearchOptions(
            beam_size=beam_size,
            ctc_weight=ctc_weight,
            penalty=penalty,
            lm_weight=lm_weight,
            maxlenratio=maxlenratio,
            minlenratio=minlenratio,
            normalize_length=normalize_length,
            nbest=nbest,
            sos=self.asr_model.sos,
            eos=self.asr_model.eos,
            vocab_size=len(self.asr_model.token_list),
        )
        self._check_model()
        self.search = BatchJointSearch(self.asr_model, self.options, self.lm)
        with torch.inference_mode():
            self.min_samples = min_input_samples(self.asr_model)
            self._check_padding()

    def _check_model(self) -> None:
        """Refuse models this backend cannot decode exactly."""
        from espnet2.asr.espnet_model import ESPnetASRModel

        from espnet_serve.backends.decoder_step import check_decoder_supported

        model = self.asr_model
        if not isinstance(model, ESPnetASRModel) or getattr(model, "use_transducer_decoder", False):
            raise UnbatchableModelError(
                f"BatchedSpeech2Text needs an espnet2 CTC/attention ESPnetASRModel, got "
                f"{type(model).__name__}. Use espnet2.bin.asr_inference.Speech2Text."
            )
        needs_ctc = self.greedy or self.options.ctc_weight > 0.0
        if needs_ctc and model.ctc is None:
            raise UnbatchableModelError("The model has no CTC head: set ctc_weight=0.0.")
        uses_decoder = not self.greedy and self.options.ctc_weight < 1.0
        if uses_decoder and model.decoder is None:
            raise UnbatchableModelError(
                "The model has no attention decoder: set ctc_weight=1.0 (CTC only)."
            )
        if self.lm is not None and self.greedy:
            raise UnbatchableModelError(
                "decoding: greedy_ctc ignores the language model: use decoding: beam."
            )
        try:
            if uses_decoder:
                check_decoder_supported(model.decoder)
            if self.lm is not None:
                check_lm_supported(self.lm)
        except NotImplementedError as exc:
            raise UnbatchableModelError(str(exc)) from exc

    def _check_padding(self) -> None:
        """Refuse an encoder whose output a padded batch changes (a layer not made exact).

        Checked in float32 whatever ``dtype`` is: padding, not precision, is in question.
        """
        try:
            mismatch = padding_mismatch(self.asr_model, self.min_samples)
        except Exception as exc:
            raise UnbatchableModelError(
                f"This model's encoder ({type(self.asr_model.encoder).__name__}) failed on a "
                f"padded batch ({type(exc).__name__}: {exc}). Use "
                "espnet2.bin.asr_inference.Speech2Text."
            ) from exc
        if not mismatch <= PADDING_TOLERANCE:
            raise UnbatchableModelError(
                f"A padded batch changes this model's encoder output "
                f"({type(self.asr_model.encoder).__name__}: by {mismatch:.2g} of its magnitude, "
                f"more than {PADDING_TOLERANCE:g}), so its answers could differ from "
                "Speech2Text's. Use espnet2.bin.asr_inference.Speech2Text."
            )

    @contextlib.contextmanager
    def keep_encoder_output(self) -> Iterator[dict[int, torch.Tensor]]:
        """Within: each decoded waveform's encoder output ``(frames, dim)``, by ``id(waveform)``.

        What a caller needs to reuse the decode pass's encoder output (for word
        alignment) instead of encoding the waveforms again.
        """
        kept: dict[int, torch.Tensor] = {}
        self._kept = kept
        try:
            yield kept
        finally:
            self._kept = None

    def __call__(self, speech: Any) -> Output | list[Output | SampleError]:
        """Recognise one waveform, or a list of them.

        Args:
            speech: A 1-D waveform (numpy array or tensor), or a list/tuple of them.

        Returns:
            For one waveform, its n-best list; for a list, one n-best list or
            :class:`SampleError` per waveform, in input order.

        Raises:
            SampleError: If a single waveform cannot be decoded.
        """
        if isinstance(speech, list | tuple):
            return self.batch(speech)
        (result,) = self.batch([speech])
        if isinstance(result, SampleError):
            raise result
        return result

    @torch.inference_mode()
    def batch(self, samples: Sequence[Any]) -> list[Output | SampleError]:
        """Recognise a list of waveforms (see :meth:`__call__`)."""
        keys = [id(sample) for sample in samples]
        return decode_in_buckets(
            samples,
            self._features,
            lambda part, feats: self._decode(feats, [keys[i] for i in part]),
            self.max_bucket_size,
            self.max_bucket_samples,
        )

    def _features(self, index: int, sample: Any) -> torch.Tensor:
        """Validate one waveform and return its front-end features on the device."""
        with self._autocast():
            return checked_features(self.asr_model, index, sample, self.min_samples, self.device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to the configured half precision on CUDA, else nothing."""
        if self.dtype in HALF_DTYPES:
            return torch.autocast(device_type="cuda", dtype=HALF_DTYPES[self.dtype])
        return contextlib.nullcontext()

    def _decode(self, feats: list[torch.Tensor], keys: list[int]) -> list[Output]:
        """Encode one bucket in one padded forward and decode all of it."""
        with self._autocast():
            enc, lengths, intermediate = encode_padded_layers(self.asr_model, feats)
            if self._kept is not None:
                for row, key in enumerate(keys):
                    self._kept[key] = enc[row, : int(lengths[row])]
            if self.greedy:
                hyps = greedy_ctc(self.asr_model, enc, lengths, self.options.sos, self.options.eos)
            else:
                hyps = self.search(enc, lengths)
        nbests = [self._nbest(h) for h in hyps]
        if not intermediate:
            return list(nbests)
        return [
            (nbest, self._interctc(intermediate, row, int(lengths[row])))
            for row, nbest in enumerate(nbests)
        ]

    def _interctc(
        self, intermediate: list[tuple[int, torch.Tensor]], row: int, length: int
    ) -> dict[int, list[str]]:
        """One row's greedy CTC tokens at each intermediate layer, as ``Speech2Text`` gives them."""
        model = self.asr_model
        excluded = {model.blank_id, model.sos, model.eos}
        tokens = {}
        for layer, output in intermediate:
            best = model.ctc.argmax(output[row : row + 1, :length])[0].tolist()
            collapsed = [token for token, _ in itertools.groupby(best) if token not in excluded]
            tokens[layer] = [model.token_list[token] for token in collapsed]
        return tokens

    def _nbest(self, hyps: list[Any]) -> NBest:
        """Token ids, tokens and text of each hypothesis, as ``Speech2Text`` formats them."""
        results: NBest = []
        for hyp in hyps:
            token_int = [t for t in hyp.yseq[1:-1].tolist() if t != 0]
            token = self.converter.ids2tokens(token_int)
            text = self.tokenizer.tokens2text(token) if self.tokenizer is not None else None
            results.append((text, token, token_int, hyp))
        return results
