"""OWSM, ESPnet's Whisper-style multilingual models: attention (``s2t``) and CTC (``s2t_ctc``).

``espnet2.bin.s2t_inference.Speech2Text`` and ``espnet2.bin.s2t_inference_ctc``'s classes.

One model transcribes and translates: each request's language and task become the
model's own prompt tokens (``<eng>``, ``<asr>`` or ``<st_eng>``), passed to the espnet2
class as its ``lang_sym`` and ``task_sym``; a prompt is its ``text_prev``. With no
language, the attention model identifies it first, as espnet2's ``Speech2Language``
does (one decoder step, the language tokens' posteriors); OWSM-CTC has no such step and
decodes with its default (``<nolang>``). Clips go through the bundle's session (so an
``output_fn`` sees what the espnet2 class returns), in batches with the batched classes
(:mod:`espnet_serve.backends.owsm`: one encoder pass, the language identified on it;
:mod:`espnet_serve.backends.owsm_ctc`: one padded pass per bucket), else one at a time.
Words are timed by the CTC head of either. A bundle that decodes with OWSM's time tokens
(``predict_time: true``, espnet2's own option) has its transcripts cut into the utterances
the model timed (:class:`TimeTokens`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from types import SimpleNamespace
from typing import Any, ClassVar

from espnet_serve.executors.base import (
    TRANSCRIBE,
    TRANSLATE,
    DecodeOptions,
    Executor,
    Hypothesis,
    Utterance,
    read_common,
)
from espnet_serve.languages import (
    FIRST_LANGUAGE_SYMBOL,
    LAST_LANGUAGE_SYMBOL,
    three_letter_code,
    two_letter_code,
)

S2T_SPEECH2TEXT = "espnet2.bin.s2t_inference.Speech2Text"
S2T_CTC_SPEECH2TEXT = "espnet2.bin.s2t_inference_ctc.Speech2Text"
S2T_CTC_GREEDY = "espnet2.bin.s2t_inference_ctc.Speech2TextGreedySearch"
BATCHED_OWSM = "espnet_serve.backends.owsm.BatchedOwsmSpeech2Text"
BATCHED_OWSM_CTC = "espnet_serve.backends.owsm_ctc.BatchedOwsmCtcSpeech2Text"
BATCHED_OWSM_CTC_GREEDY = "espnet_serve.backends.owsm_ctc.BatchedOwsmCtcGreedySearch"
ASR_TASK_SYMBOL = "<asr>"
TRANSLATE_TASK_PREFIX = "<st_"  # <st_eng>: translate into English


class UnsupportedOptionError(ValueError):
    """A language or task the model has no token for (the HTTP layer refuses it first)."""


@dataclass(frozen=True)
class OwsmVocabulary:
    """OWSM's prompt tokens, read from the model's token list.

    Attributes:
        language_symbols: ``<eng>``, ... by ISO-639-1 code (languages with one).
        translation_symbols: ``<st_eng>``, ... by the ISO-639-1 code they write.
        language_ids: The language tokens' ids, by id: their ISO-639-1 code, or the
            three-letter code where there is none.
    """

    language_symbols: dict[str, str]
    translation_symbols: dict[str, str]
    language_ids: dict[int, str]

    @classmethod
    def of(cls, token_list: Sequence[str]) -> OwsmVocabulary:
        """The prompt tokens of ``token_list`` (none if it has no OWSM language range)."""
        tokens = [str(token) for token in token_list]
        if FIRST_LANGUAGE_SYMBOL not in tokens or LAST_LANGUAGE_SYMBOL not in tokens:
            return cls({}, {}, {})
        first, last = tokens.index(FIRST_LANGUAGE_SYMBOL), tokens.index(LAST_LANGUAGE_SYMBOL)
        language_ids: dict[int, str] = {}
        language_symbols: dict[str, str] = {}
        for token_id in range(first, last + 1):
            alpha_3 = tokens[token_id].strip("<>")
            alpha_2 = two_letter_code(alpha_3)
            language_ids[token_id] = alpha_2 or alpha_3
            if alpha_2 is not None:
                language_symbols.setdefault(alpha_2, tokens[token_id])
        translation_symbols = {
            alpha_2: token
            for token in tokens
            if token.startswith(TRANSLATE_TASK_PREFIX) and token.endswith(">")
            for alpha_2 in [two_letter_code(token[len(TRANSLATE_TASK_PREFIX) : -1])]
            if alpha_2 is not None
        }
        return cls(language_symbols, translation_symbols, language_ids)

    def language_symbol(self, language: str) -> str:
        """The token of an ISO-639-1 code.

        Raises:
            UnsupportedOptionError: If the model has none.
        """
        symbol = self.language_symbols.get(language)
        if symbol is None:
            raise UnsupportedOptionError(f"The model has no language token for {language!r}.")
        return symbol

    def task_symbol(self, options: DecodeOptions) -> str:
        """``<asr>``, or the translation token of the target language.

        Raises:
            UnsupportedOptionError: If the model does not translate into it.
        """
        if options.task == TRANSCRIBE:
            return ASR_TASK_SYMBOL
        symbol = self.translation_symbols.get(options.target_language)
        if symbol is None:
            raise UnsupportedOptionError(
                f"The model does not translate into {options.target_language!r} "
                f"({three_letter_code(options.target_language)})."
            )
        return symbol

    def language_of(self, token_ids: Sequence[int] | None) -> str | None:
        """The language of a hypothesis that starts with a language token, as OWSM's do."""
        return self.language_ids.get(token_ids[0]) if token_ids else None


@dataclass(frozen=True)
class TimeTokens:
    """OWSM's time tokens ``<0.00>`` ... ``<30.00>``: ids ``first`` to ``last``, evenly spaced.

    A hypothesis decoded with them (``predict_time``) times each utterance:
    ``<0.48> text <1.62><1.90> text <3.04>``; espnet2's ``ScoreFilter`` keeps them in pairs,
    rising, the first one first.
    """

    first: int
    last: int
    resolution: float

    @classmethod
    def of(cls, backend: Any) -> TimeTokens | None:
        """The time tokens of an OWSM class's model (``None`` if it has none)."""
        conf = getattr(backend, "preprocessor_conf", None) or {}
        token2id = backend.converter.token2id
        first, last = conf.get("first_time_symbol"), conf.get("last_time_symbol")
        if first not in token2id or last not in token2id or "speech_resolution" not in conf:
            return None
        return cls(token2id[first], token2id[last], float(conf["speech_resolution"]))

    def is_time(self, token_id: int) -> bool:
        """Whether ``token_id`` is a time token."""
        return self.first <= token_id <= self.last

    def utterances(self, token_ids: Sequence[int], text_of: Any) -> tuple[Utterance, ...]:
        """The utterances of a hypothesis' token ids, each with the text ``text_of`` its ids gives.

        Tokens before the first time (the language and the task) go with the first
        utterance; an utterance the search left open (at its length limit) ends with the
        sample. Empty if no token is a time.
        """
        if not any(self.is_time(token) for token in token_ids):
            return ()
        utterances: list[Utterance] = []
        pending: list[int] = []  # tokens of the utterance being read
        start: float | None = None
        for token in token_ids:
            pending.append(token)
            if not self.is_time(token):
                continue
            time = round((token - self.first) * self.resolution, 3)
            if start is None:
                start = time
                continue
            utterances.append(self._utterance(start, time, pending, text_of))
            pending, start = [], None
        if start is not None or text_of([t for t in pending if not self.is_time(t)]).strip():
            last_end = utterances[-1].end if utterances else 0.0
            begin = start if start is not None else last_end
            utterances.append(self._utterance(begin, None, pending, text_of))
        return tuple(utterances)

    def _utterance(
        self, start: float, end: float | None, token_ids: list[int], text_of: Any
    ) -> Utterance:
        text = text_of([token for token in token_ids if not self.is_time(token)])
        return Utterance(start=start, end=end, text=text, token_ids=tuple(token_ids))


class _OwsmExecutor(Executor):
    """What OWSM and OWSM-CTC share: prompt tokens as the espnet2 class's keyword inputs.

    Attributes:
        batch_inputs: The keyword inputs of a batched backend's call, with the value a
            clip gets when its request does not set one.
    """

    tasks = (TRANSCRIBE, TRANSLATE)
    batch_inputs: ClassVar[dict[str, Any]] = {}

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._views: dict[tuple[str, ...], Any] = {}

    @cached_property
    def vocabulary(self) -> OwsmVocabulary:
        """The model's language and task tokens."""
        return OwsmVocabulary.of(self.backend.s2t_model.token_list)

    def languages(self) -> tuple[str, ...]:
        """The ISO-639-1 codes of the model's language tokens."""
        return tuple(sorted(self.vocabulary.language_symbols))

    def target_languages(self) -> tuple[str, ...]:
        """The ISO-639-1 codes of the model's translation tokens."""
        return tuple(sorted(self.vocabulary.translation_symbols))

    def _view(self, keys: tuple[str, ...]) -> Any:
        """The bundle's session taking ``keys`` too, as keyword inputs of the espnet2 class.

        An ``InferenceSession`` on the same backend and ``output_fn``, whose input keys are
        the audio's and ``keys``.
        """
        if keys not in self._views:
            self._views[keys] = type(self.session)(
                self.session.model,
                input_key=[self.session.primary_input_key, *keys],
                output_fn=self.session.output_fn,
                prefer_model_batch=self.session.prefer_model_batch,
                fallback_to_single_on_batch_error=self.session.fallback_to_single_on_batch_error,
                bundle_root=self.session.bundle_root,
                bundle_metadata=self.session.bundle_metadata,
            )
        return self._views[keys]

    def decode(
        self, waves: Sequence[Any], options: Sequence[DecodeOptions] | None = None
    ) -> list[Any]:
        """Each clip with its own language, task and prompt; an error stays in its slot.

        With a batched backend, all clips in one session call; else one call per clip.
        """
        asked = list(options) if options is not None else [DecodeOptions()] * len(waves)
        outputs: list[Any] = [None] * len(waves)
        samples: dict[int, Any] = {}
        for slot, (wave, option) in enumerate(zip(waves, asked, strict=True)):
            try:
                samples[slot] = self._inputs(wave, option)
            except Exception as exc:  # this clip's failure, not the batch's
                outputs[slot] = exc
        if self.batched and samples:
            view = self._view(tuple(self.batch_inputs))
            key = self.session.primary_input_key
            decoded = view.forward_batch(
                [{key: waves[slot], **inputs} for slot, inputs in samples.items()],
                return_exceptions=True,
            )
            for slot, output in zip(samples, decoded, strict=True):
                outputs[slot] = output
            return outputs
        for slot, inputs in samples.items():
            try:
                outputs[slot] = self._decode_one(waves[slot], inputs)
            except Exception as exc:  # this clip's failure, not the batch's
                outputs[slot] = exc
        return outputs

    @property
    def batched(self) -> bool:
        """Whether the backend is one of the family's batched classes."""
        backend = type(self.backend)
        return f"{backend.__module__}.{backend.__qualname__}" in self.batched_classes.values()

    def _inputs(self, wave: Any, options: DecodeOptions) -> dict[str, Any]:
        """The class's keyword inputs for one clip.

        Every one of :attr:`batch_inputs` when batched: a batched call takes the same keys
        for all its clips.

        Raises:
            UnsupportedOptionError: If the model has no token for a language or task.
        """
        inputs = dict(self.batch_inputs) if self.batched else {}
        inputs["task_sym"] = self.vocabulary.task_symbol(options)
        if self.batched:  # no language: the backend's own choice (see batch_inputs)
            language = options.language
            inputs["lang_sym"] = (
                None if language is None else self.vocabulary.language_symbol(language)
            )
        else:
            inputs["lang_sym"] = self._language_symbol(wave, options)
        if options.prompt:
            inputs["text_prev"] = options.prompt
        return inputs

    def _decode_one(self, wave: Any, inputs: dict[str, Any]) -> Any:
        """One clip through the session, with the class's keyword ``inputs``."""
        view = self._view(tuple(inputs))
        return view.forward({self.session.primary_input_key: wave, **inputs})

    def _language_symbol(self, wave: Any, options: DecodeOptions) -> str | None:
        """The language token to decode with (``None``: the class's default)."""
        if options.language is None:
            return None
        return self.vocabulary.language_symbol(options.language)

    def ctc_backend(self) -> Any | None:
        """The CTC head (``s2t_model.ctc``), its tokenizer and converter, for word times.

        ``None`` for a model trained without CTC.
        """
        model = self.backend.s2t_model
        if getattr(model, "ctc", None) is None:
            return None
        return SimpleNamespace(
            asr_model=model, tokenizer=self.backend.tokenizer, converter=self.backend.converter
        )

    def read(self, output: Any) -> Hypothesis:
        """The n-best list (of ``(n-best, interCTC)`` when the class adds intermediate CTC)."""
        if isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], list):
            output = output[0]
        return read_common(output)


class S2tExecutor(_OwsmExecutor):
    """espnet2's ``s2t_inference.Speech2Text`` (OWSM): attention decoder, clips padded to 30 s.

    Batched with :class:`espnet_serve.backends.owsm.BatchedOwsmSpeech2Text`: one encoder
    pass per batch (every clip is 30 s, so no padding to make exact), the language
    identified on it, espnet2's search per clip. Words are aligned on the clip's own
    encoding, not on the 30 s padded one the decoder read (the aligner encodes the clip
    again).
    """

    family = "s2t"
    # lang_sym None with identify_language: the language the model identifies.
    batch_inputs = {
        "lang_sym": None,
        "task_sym": None,
        "text_prev": None,
        "identify_language": False,
    }
    inference_classes = (S2T_SPEECH2TEXT, BATCHED_OWSM)
    batched_classes = {S2T_SPEECH2TEXT: BATCHED_OWSM}
    unbatched_reason = ""

    @cached_property
    def identifier(self) -> Any:
        """espnet2's ``Speech2Language`` on this model's weights (not a second copy of them).

        Built without its constructor (which would load the weights again) and given the
        attributes its ``__call__`` reads, so language identification runs espnet2's own code.
        """
        from espnet2.bin.s2t_inference_language import Speech2Language

        backend = self.backend
        token_list = list(backend.s2t_model.token_list)
        identifier = Speech2Language.__new__(Speech2Language)
        identifier.s2t_model = backend.s2t_model
        identifier.s2t_train_args = getattr(backend, "s2t_train_args", None)
        identifier.preprocessor_conf = backend.preprocessor_conf
        identifier.device = backend.device
        identifier.dtype = backend.dtype
        identifier.nbest = 1
        identifier.first_lang_id = token_list.index(FIRST_LANGUAGE_SYMBOL)
        identifier.last_lang_id = token_list.index(LAST_LANGUAGE_SYMBOL)
        return identifier

    @cached_property
    def time_tokens(self) -> TimeTokens | None:
        """The model's time tokens, if it has them."""
        return TimeTokens.of(self.backend)

    def read(self, output: Any) -> Hypothesis:
        """The best hypothesis, its language read from its first token (``<eng>``, ...).

        Decoded with time tokens, its utterances as the model timed them.
        """
        hypothesis = super().read(output)
        language = self.vocabulary.language_of(hypothesis.token_ids)
        utterances: tuple[Utterance, ...] = ()
        if self.time_tokens is not None and hypothesis.token_ids:
            utterances = self.time_tokens.utterances(hypothesis.token_ids, self._text_of)
        return replace(hypothesis, language=language, utterances=utterances)

    def _text_of(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids``, as espnet2's class writes a hypothesis'."""
        backend = self.backend
        return str(backend.tokenizer.tokens2text(backend.converter.ids2tokens(list(token_ids))))

    def identify(self, wave: Any) -> str:
        """The language token the model gives ``wave`` (``<eng>``, ...)."""
        return self.identifier(wave)[0][0]

    def _inputs(self, wave: Any, options: DecodeOptions) -> dict[str, Any]:
        """The class's inputs; a batched backend identifies the language itself."""
        inputs = super()._inputs(wave, options)
        if self.batched:
            inputs["identify_language"] = options.language is None
        return inputs

    def _language_symbol(self, wave: Any, options: DecodeOptions) -> str | None:
        """The requested language's token; with none, the one the model identifies."""
        if options.language is None:
            return self.identify(wave)
        return self.vocabulary.language_symbol(options.language)

    def min_samples(self) -> int:
        """Any clip: espnet2 pads every clip to the model's 30 s."""
        return 1


class S2tCtcExecutor(_OwsmExecutor):
    """espnet2's ``s2t_inference_ctc`` classes (OWSM-CTC): no decoder, no language step."""

    family = "s2t_ctc"
    inference_classes = (
        S2T_CTC_SPEECH2TEXT,
        S2T_CTC_GREEDY,
        BATCHED_OWSM_CTC,
        BATCHED_OWSM_CTC_GREEDY,
    )
    batched_classes = {
        S2T_CTC_SPEECH2TEXT: BATCHED_OWSM_CTC,
        S2T_CTC_GREEDY: BATCHED_OWSM_CTC_GREEDY,
    }
    # ESPnetS2TCTCModel.encode puts the <lang> <task> prefix before the subsampled speech,
    # and the class decodes (CTC) over those frames too.
    leading_frames = 2
    # lang_sym None: the class's default (<nolang>); text_prev <na>: no prompt.
    batch_inputs = {"lang_sym": None, "task_sym": None, "text_prev": "<na>"}

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._kept: dict[int, Any] | None = None

    @contextlib.contextmanager
    def keep_encoder_output(self) -> Iterator[dict[int, Any]]:
        """Within: each decoded clip's encoder output, as espnet2's class computed it.

        OWSM-CTC's encoder reads the request's language, task and prompt, so words are
        aligned on the very output the class decoded, prefix frames included
        (:attr:`leading_frames`): the model may emit a token there. A batched backend keeps
        each clip's rows of its padded pass.
        """
        if self.batched:
            with super().keep_encoder_output() as kept:
                yield kept
            return
        self._kept = kept = {}
        try:
            yield kept
        finally:
            self._kept = None

    def _decode_one(self, wave: Any, inputs: dict[str, Any]) -> Any:
        """The class's output; its encoder output kept too, within :meth:`keep_encoder_output`."""
        kept = self._kept
        if kept is None:
            return super()._decode_one(wave, inputs)

        def keep(module: Any, args: Any, output: Any) -> None:
            encoded, lengths = output[0], output[1]
            if isinstance(encoded, tuple):  # (output, interCTC outputs)
                encoded = encoded[0]
            kept[id(wave)] = encoded[0, : int(lengths[0])]

        handle = self.backend.s2t_model.encoder.register_forward_hook(keep)
        try:
            return super()._decode_one(wave, inputs)
        finally:
            handle.remove()

    def min_samples(self) -> int:
        """Found on the model's front end and the encoder's subsampling."""
        from espnet_serve.backends.encoding import min_input_samples

        return min_input_samples(self.backend.s2t_model)
