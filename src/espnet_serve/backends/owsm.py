"""``BatchedOwsmSpeech2Text``: OWSM's ``Speech2Text`` with one encoder pass per batch.

espnet2's ``s2t_inference.Speech2Text`` pads or trims every clip to the model's fixed
length (30 s), so a batch of clips is one encoder pass with no padding to make exact: each
row is what the class computes alone. Language identification (espnet2's
``Speech2Language``: one decoder step after ``<sos>``) runs on that same encoder output,
batched, instead of encoding each clip a second time. The search stays espnet2's own, one
clip at a time, with each clip's language, task and previous text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from espnet2.bin.s2t_inference import Speech2Text

from espnet_serve.backends.bucketing import per_clip
from espnet_serve.backends.offline import block_runtime_downloads
from espnet_serve.backends.sample_errors import InvalidSampleError, SampleError, decode_in_buckets
from espnet_serve.backends.waveform import checked_waveform
from espnet_serve.languages import FIRST_LANGUAGE_SYMBOL, LAST_LANGUAGE_SYMBOL


class BatchedOwsmSpeech2Text(Speech2Text):
    """OWSM speech recognition and translation, many clips per call.

    Built with ``Speech2Text``'s options (it can be an inference config's
    ``model._target_``). A call with one waveform is ``Speech2Text``'s call. A call with
    a list decodes each clip with its own options (lists of one entry per clip, or one
    value for all) and returns one output per clip, or a :class:`SampleError` in the
    slot of a clip that cannot be decoded.

    Args:
        max_bucket_size: Most clips per encoder pass.
        *args: ``Speech2Text``'s.
        **kwargs: ``Speech2Text``'s.
    """

    def __init__(self, *args: Any, max_bucket_size: int = 8, **kwargs: Any) -> None:
        block_runtime_downloads()
        if max_bucket_size < 1:
            raise ValueError(f"max_bucket_size must be at least 1, got {max_bucket_size}.")
        super().__init__(*args, **kwargs)
        self.max_bucket_size = max_bucket_size
        token_list = list(self.s2t_model.token_list)
        self._languages = (
            (token_list.index(FIRST_LANGUAGE_SYMBOL), token_list.index(LAST_LANGUAGE_SYMBOL))
            if FIRST_LANGUAGE_SYMBOL in token_list and LAST_LANGUAGE_SYMBOL in token_list
            else None
        )

    def __call__(  # type: ignore[override]
        self,
        speech: Any,
        text_prev: Any = None,
        lang_sym: Any = None,
        task_sym: Any = None,
        predict_time: Any = None,
        identify_language: Any = False,
    ) -> Any:
        """Decode one clip (``Speech2Text``'s call), or a list of them.

        Args:
            speech: A waveform, or a list of them.
            text_prev: Previous text (``None``: none), per clip for a list.
            lang_sym: Language token (``None``: the configured one), per clip for a list.
            task_sym: Task token (``None``: the configured one), per clip for a list.
            predict_time: Whether to predict time stamps (``None``: as configured).
            identify_language: Decode with the language token the model gives the clip
                (what ``Speech2Language`` returns), in place of ``lang_sym``.

        Returns:
            For one waveform, what ``Speech2Text`` returns; for a list, one such output or
            :class:`SampleError` per clip, in input order.

        Raises:
            SampleError: If a single waveform cannot be decoded.
        """
        if not isinstance(speech, list | tuple):
            if not _first(identify_language):
                return super().__call__(speech, text_prev, lang_sym, task_sym, predict_time)
            (result,) = self.batch(
                [speech], [text_prev], [lang_sym], [task_sym], [predict_time], [True]
            )
            if isinstance(result, SampleError):
                raise result
            return result
        count = len(speech)
        return self.batch(
            list(speech),
            *(
                per_clip(value, count)
                for value in (text_prev, lang_sym, task_sym, predict_time, identify_language)
            ),
        )

    @torch.inference_mode()
    def batch(
        self,
        speech: list[Any],
        text_prev: list[Any],
        lang_sym: list[Any],
        task_sym: list[Any],
        predict_time: list[Any],
        identify_language: list[Any],
    ) -> list[Any]:
        """Decode clips, each with its own options (see :meth:`__call__`)."""

        def prepare(index: int, sample: Any) -> torch.Tensor:
            if identify_language[index] and self._languages is None:
                raise InvalidSampleError(
                    index, "no language identification", "the vocabulary has no language tokens"
                )
            return self._fixed_length(checked_waveform(index, sample, 1, self.device))

        def decode(part: list[int], waves: list[torch.Tensor]) -> list[Any]:
            options = [
                (text_prev[i], lang_sym[i], task_sym[i], predict_time[i], identify_language[i])
                for i in part
            ]
            return self._decode(waves, options)

        # Every clip is the model's 30 s: a bucket is any max_bucket_size of them.
        return decode_in_buckets(speech, prepare, decode, self.max_bucket_size)

    def _fixed_length(self, wave: torch.Tensor) -> torch.Tensor:
        """The clip padded or trimmed to the model's input length, as ``Speech2Text`` does."""
        length = int(self.preprocessor_conf["fs"] * self.preprocessor_conf["speech_length"])
        if wave.size(-1) >= length:
            return wave[:length]
        return F.pad(wave, (0, length - wave.size(-1)))

    def _decode(
        self, waves: list[torch.Tensor], options: Sequence[tuple[Any, Any, Any, Any, bool]]
    ) -> list[Any]:
        """One encoder pass for ``waves``; then espnet2's search on each row."""
        speech = torch.stack(waves).to(getattr(torch, self.dtype))
        lengths = speech.new_full([len(waves)], dtype=torch.long, fill_value=speech.size(1))
        enc, _ = self.s2t_model.encode(speech=speech, speech_lengths=lengths)
        intermediate = None
        if isinstance(enc, tuple):
            enc, intermediate = enc
        identified = self._identify(enc, [row for row, option in enumerate(options) if option[4]])
        outputs = []
        for row, (text_prev, lang_sym, task_sym, predict_time, _) in enumerate(options):
            language = identified.get(row, lang_sym)
            self.beam_search.set_hyp_primer(
                self._primer(text_prev, language, task_sym, predict_time)
            )
            results = self._decode_single_sample(enc[row])
            if intermediate is not None:
                rows = [(layer, output[row : row + 1]) for layer, output in intermediate]
                results = (results, self._decode_interctc(rows))
            outputs.append(results)
        return outputs

    def _identify(self, enc: torch.Tensor, rows: list[int]) -> dict[int, str]:
        """The language token of each of ``rows``, as ``Speech2Language`` gives it (top 1)."""
        if not rows or self._languages is None:
            return {}
        first, last = self._languages
        memory = enc[rows]
        ys = torch.full((len(rows), 1), self.s2t_model.sos, dtype=torch.long, device=enc.device)
        logp, _ = self.s2t_model.decoder.batch_score(ys, [None], memory)
        identified = {}
        for position, row in enumerate(rows):
            prob = torch.softmax(logp[position, first : last + 1], -1)
            best = int(torch.topk(prob, 1).indices[0])
            identified[row] = self.s2t_model.token_list[best + first]
        return identified

    def _primer(self, text_prev: Any, lang_sym: Any, task_sym: Any, predict_time: Any) -> list[int]:
        """The hypothesis primer ``Speech2Text.__call__`` builds from the same options."""
        lang_sym = lang_sym if lang_sym is not None else self.lang_sym
        task_sym = task_sym if task_sym is not None else self.task_sym
        predict_time = predict_time if predict_time is not None else self.predict_time
        primer = [
            self.s2t_model.sos,
            self.converter.token2id[lang_sym],
            self.converter.token2id[task_sym],
        ]
        if not predict_time:
            primer.append(self.converter.token2id[self.preprocessor_conf["notime_symbol"]])
        if text_prev is not None:
            if isinstance(text_prev, str):
                text_prev = self.converter.tokens2ids(self.tokenizer.text2tokens(text_prev))
            else:
                text_prev = text_prev.tolist()
            if self.s2t_model.na in text_prev:
                text_prev = None
        if text_prev is not None:
            primer = [self.s2t_model.sop, *text_prev, *primer]
        return primer


def _first(value: Any) -> Any:
    """A per-clip option's value for a single clip (a one-entry list, or the value)."""
    return value[0] if isinstance(value, list | tuple) else value
