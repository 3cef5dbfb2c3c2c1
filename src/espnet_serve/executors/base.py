"""The executor interface: what the model service needs to know about one espnet2 class.

An executor wraps an ``InferenceSession`` whose backend is one family's espnet2
inference class. It decodes a batch of waveforms through the session (so a
bundle's ``output_fn`` sees exactly what the espnet2 class returns) and reads
each output as a :class:`Hypothesis`. The rest of the pipeline (word times,
segments, the wire) is the same for every family.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, ClassVar

# What the HTTP layer may ask of a model (/v1/audio/transcriptions, /v1/audio/translations).
TRANSCRIBE = "transcribe"
TRANSLATE = "translate"
SYNTHESIZE = "synthesize"  # /v1/audio/speech
ENHANCE = "enhance"  # /v1/audio/enhancements
TEXT_KEYS = ("text", "hyp")
# ESPnet writes its special symbols in angle brackets: <blank>, <unk>, <sos/eos>, OWSM's <na>,
# <eng>, <asr>, <0.00>, ... A vocabulary token of that form is never served as text.
SPECIAL_SYMBOL = re.compile(r"<[^<>\s]+>")
EXTRA_SPACES = re.compile(r"\s{2,}")
TOKEN_ID_KEYS = ("token_int", "token_ids")
DEFAULT_TARGET_LANGUAGE = "en"  # what /v1/audio/translations writes, as OpenAI defines it


@dataclass(frozen=True)
class DecodeOptions:
    """What one request asks of the model, beyond its audio.

    A family that takes none of these (an ASR recipe model) decodes as its bundle says;
    a multilingual, multitask one (OWSM) turns them into its own prompt tokens.

    Attributes:
        task: :data:`TRANSCRIBE` or :data:`TRANSLATE`.
        language: ISO-639-1 code of the speech (``None``: the model's own language
            identification, where it has one, else its default).
        target_language: ISO-639-1 code a translation is written in.
        prompt: Text that precedes the speech (OWSM's previous-text prompt).
    """

    task: str = TRANSCRIBE
    language: str | None = None
    target_language: str = DEFAULT_TARGET_LANGUAGE
    prompt: str | None = None


@dataclass(frozen=True)
class Utterance:
    """One utterance a model timed itself (OWSM's time tokens: ``<0.48> text <1.62>``).

    Attributes:
        start: Its start, in seconds from the start of the sample.
        end: Its end, likewise (``None``: the model did not end it, so the sample's end).
        text: Its transcript.
        token_ids: Its token ids, its time tokens included.
    """

    start: float
    end: float | None
    text: str
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class Hypothesis:
    """The best hypothesis of one sample.

    Attributes:
        text: The transcript.
        token_ids: Its token ids in the model's vocabulary, where the output holds them.
        language: ISO-639-1 code of the language the model decoded the speech as, where
            the output shows it (OWSM's language token).
        utterances: The transcript as the model timed it, where it did (empty: not timed).
    """

    text: str
    token_ids: tuple[int, ...] | None = None
    language: str | None = None
    utterances: tuple[Utterance, ...] = ()


class FamilyExecutor(ABC):
    """Serves one family of espnet2 inference classes: what every executor says of itself.

    Class attributes say what the family is; instances wrap one session.

    Attributes:
        family: The family's name (``/v1/models``, the model store, ``espnet-serve build``).
        tasks: What the HTTP layer may ask of it (:data:`TRANSCRIBE`, :data:`TRANSLATE`,
            :data:`SYNTHESIZE`, :data:`ENHANCE`).
        inference_classes: The ``_target_`` s of an inference config this executor serves.
        batched_classes: For an espnet2 class of the family, a batched class built from the
            same options, exact for it (none: decoded one clip at a time).
        unbatched_reason: Why the family is decoded one input at a time (when it is).

    Args:
        session: An ``InferenceSession`` whose backend is one of ``inference_classes``.
    """

    family: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = (TRANSCRIBE,)
    inference_classes: ClassVar[tuple[str, ...]]
    batched_classes: ClassVar[Mapping[str, str]] = {}
    unbatched_reason: ClassVar[str] = ""

    def __init__(self, session: Any) -> None:
        self.session = session

    @property
    def backend(self) -> Any:
        """The espnet2 object the session calls."""
        return self.session.model


class Executor(FamilyExecutor):
    """Decodes speech with one family's espnet2 inference class (speech in, text out).

    Attributes:
        leading_frames: Frames at the start of an encoder output it keeps
            (:meth:`keep_encoder_output`) that hold no audio.
    """

    leading_frames: ClassVar[int] = 0

    def decode(
        self, waves: Sequence[Any], options: Sequence[DecodeOptions] | None = None
    ) -> list[Any]:
        """One session output per waveform, or the exception that sample met (in its slot).

        Args:
            waves: The batch.
            options: What each sample asks (default: transcribe, as the bundle says). A
                family that takes no options (the base's) ignores them: the HTTP layer
                only asks what :attr:`tasks`, :meth:`languages` and
                :meth:`target_languages` allow.
        """
        return list(self.session.forward_batch(list(waves), return_exceptions=True))

    def languages(self) -> tuple[str, ...]:
        """ISO-639-1 codes a request may name as the speech's language (empty: not known)."""
        return ()

    def target_languages(self) -> tuple[str, ...]:
        """ISO-639-1 codes a translation may be written in (empty: not known)."""
        return ()

    def read(self, output: Any) -> Hypothesis:
        """The best hypothesis in one sample's output (the class's own, or an ``output_fn``'s).

        Raises:
            TypeError: If the output has no transcript.
        """
        return read_common(output)

    @cached_property
    def special_symbols(self) -> frozenset[str]:
        """The model's special symbols: the tokens of its vocabulary written ``<...>``."""
        token_list = getattr(getattr(self.backend, "converter", None), "token_list", None) or []
        return frozenset(t for t in token_list if SPECIAL_SYMBOL.fullmatch(str(t)))

    def without_special_symbols(self, hypothesis: Hypothesis) -> Hypothesis:
        """The hypothesis with the model's special symbols taken out of its text.

        The one place where served text differs from the espnet2 object's: a model may
        emit ``<sos/eos>`` or ``<unk>`` as a token, and a client must never read one as a
        word. The token ids are kept as the model gave them.
        """
        utterances = tuple(
            replace(utterance, text=self._plain(utterance.text))
            for utterance in hypothesis.utterances
        )
        return replace(hypothesis, text=self._plain(hypothesis.text), utterances=utterances)

    def _plain(self, text: str) -> str:
        """``text`` without the model's special symbols."""
        found = [s for s in SPECIAL_SYMBOL.findall(text) if s in self.special_symbols]
        if not found:
            return text
        for symbol in set(found):
            text = text.replace(symbol, "")  # a symbol inside a word joins its halves
        return EXTRA_SPACES.sub(" ", text).strip()

    def min_samples(self) -> int:
        """The fewest samples the model decodes (0: no known limit)."""
        return int(getattr(self.backend, "min_samples", 0))

    def ctc_backend(self) -> Any | None:
        """The object word times are aligned with (``asr_model.ctc``, tokenizer), if any."""
        return None

    @contextlib.contextmanager
    def keep_encoder_output(self) -> Iterator[dict[int, Any]]:
        """Within: each decoded waveform's encoder output ``(frames, dim)``, by ``id(waveform)``.

        The output the decode pass computed, for word times to reuse instead of encoding
        the waveform again: the backend's, where it keeps it (``BatchedSpeech2Text``);
        otherwise the mapping stays empty.
        """
        keep = getattr(self.backend, "keep_encoder_output", None)
        if keep is None:
            yield {}
            return
        with keep() as kept:
            yield kept


def read_common(output: Any) -> Hypothesis:
    """Read the shapes every family may return.

    A plain string; an ``output_fn`` mapping with ``text`` (or ``hyp``) and
    optionally ``token_int``; or an espnet2 n-best list of
    ``(text, token, token_int, hyp)``.

    Raises:
        TypeError: If the output has none of these shapes.
    """
    if isinstance(output, str):
        return Hypothesis(output)
    if isinstance(output, Mapping):
        for key in TEXT_KEYS:
            if isinstance(output.get(key), str):
                return Hypothesis(output[key], _token_ids(_first(output, TOKEN_ID_KEYS)))
    if isinstance(output, Sequence) and output:
        best = output[0]
        if isinstance(best, Sequence) and best and isinstance(best[0], str):
            return Hypothesis(best[0], _token_ids(best[2]) if len(best) > 2 else None)
    raise TypeError(f"Cannot find a transcript in a {type(output).__name__} output.")


def _first(mapping: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((mapping[key] for key in keys if key in mapping), None)


def _token_ids(value: Any) -> tuple[int, ...] | None:
    """Token ids as a tuple of ints, or ``None`` if ``value`` is not a sequence of ints."""
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        return tuple(int(token) for token in value)
    except (TypeError, ValueError):
        return None
