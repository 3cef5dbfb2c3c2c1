"""Speech synthesis: espnet2's ``Text2Speech`` (VITS, JETS, FastSpeech2, Tacotron2, a vocoder).

A request's text, voice and speed become one ``Text2Speech`` call: the voice
selects the bundle's speaker id, language id or speaker embedding, the speed
becomes the model's duration scale. Each call seeds espnet2's random state
with the model's seed first (``Text2Speech(always_fix_seed=True)``), so a model
that draws noise (VITS, JETS) gives the same samples for the same text every
time, as the class called in-process with that option does; a Griffin-Lim
vocoder's phases are seeded too (:func:`seeded_griffin_lim`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from espnet_serve.executors.base import SPECIAL_SYMBOL, SYNTHESIZE, FamilyExecutor

TEXT2SPEECH = "espnet2.bin.tts_inference.Text2Speech"
DEFAULT_VOICE = "default"
VOICES_KEY = "voices"  # in meta.yaml: name -> {sid: int} | {lid: int} | {spembs: path}
VOICE_FIELDS = ("sid", "lid", "spembs")
MAX_LISTED_WORDS = 100  # a word-token model's words are named in its refusals up to this many
# espnet2 loads a vocoder file of this suffix with the `parallel_wavegan` package, whose newest
# release (0.6.1) imports `scipy.signal.kaiser`, gone since SciPy 1.13: it cannot load here.
PARALLEL_WAVEGAN_SUFFIX = ".pkl"


class SynthesisInputError(ValueError):
    """A request the model cannot synthesise (an unknown voice, a speed it cannot change).

    Attributes:
        code: What is wrong, as the HTTP layer names it.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Voice:
    """One named voice: the inputs that select it, as ``Text2Speech`` takes them.

    Attributes:
        name: What a request's ``voice`` says.
        sid: Speaker id (``sids``) of a multi-speaker model.
        lid: Language id (``lids``) of a multilingual model.
        spembs: Speaker embedding (``spembs``, an x-vector) of a model conditioned on one.
    """

    name: str
    sid: int | None = None
    lid: int | None = None
    spembs: np.ndarray | None = None

    def inputs(self) -> dict[str, np.ndarray]:
        """``Text2Speech`` keyword arguments for this voice."""
        found: dict[str, np.ndarray] = {}
        if self.sid is not None:
            found["sids"] = np.array([self.sid])
        if self.lid is not None:
            found["lids"] = np.array([self.lid])
        if self.spembs is not None:
            found["spembs"] = self.spembs
        return found


@dataclass(frozen=True)
class SynthesisOptions:
    """What one request asks beyond its text.

    Attributes:
        voice: A voice name (``None``: the model's default voice).
        speed: Speaking rate, 1 as trained (OpenAI's ``speed``: 2 is twice as fast).
    """

    voice: str | None = None
    speed: float = 1.0


class TtsExecutor(FamilyExecutor):
    """Synthesises speech with ``espnet2.bin.tts_inference.Text2Speech``.

    Args:
        session: An ``InferenceSession`` whose backend is ``Text2Speech``; its bundle's
            ``meta.yaml`` may name voices (:data:`VOICES_KEY`).

    Raises:
        ValueError: If the bundle's voices are malformed, or the model needs a speaker
            embedding and the bundle names no voice that gives one.
    """

    family: ClassVar[str] = "tts"
    tasks: ClassVar[tuple[str, ...]] = (SYNTHESIZE,)
    inference_classes: ClassVar[tuple[str, ...]] = (TEXT2SPEECH,)
    unbatched_reason: ClassVar[str] = (
        "espnet2's Text2Speech synthesises one text per call: the models' inference "
        "(VITS, FastSpeech2, Tacotron2) takes a batch of one"
    )

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self.voices = _voices(self.backend, session)
        self._lock = threading.Lock()  # espnet2's random state is global

    @property
    def sample_rate(self) -> int:
        """The rate of the synthesised audio (the vocoder's, else the model's)."""
        return int(self.backend.fs)

    @property
    def default_voice(self) -> str:
        """The voice a request that names none (or an OpenAI voice name) gets."""
        return next(iter(self.voices))

    @property
    def speed_control(self) -> bool:
        """Whether the model can change its speaking rate.

        Models that predict durations take a duration scale ``alpha`` (VITS, FastSpeech2;
        in a joint text-to-wav model, its text-to-mel part); the others cannot.
        """
        model = self.backend.tts
        durations = model.generator["text2mel"] if _is_joint(model) else model
        return "alpha" in inspect.signature(durations.inference).parameters

    def synthesize(self, text: str, options: SynthesisOptions | None = None) -> np.ndarray:
        """One text as mono float32 samples at :attr:`sample_rate`.

        Raises:
            SynthesisInputError: For an unknown voice, a speed the model cannot change,
                text that leaves no token to speak, or words (or characters) the model has
                no token for.
        """
        from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

        options = options or SynthesisOptions()
        voice = self.voices.get(options.voice or self.default_voice)
        if voice is None:
            raise SynthesisInputError(
                f"The voice {options.voice!r} does not exist; this model has: "
                f"{', '.join(self.voices)}.",
                code="unknown_voice",
            )
        decode_conf: dict[str, Any] = {}
        if options.speed != 1.0:
            if not self.speed_control:
                raise SynthesisInputError(
                    f"This model ({type(self.backend.tts).__name__}) cannot change its "
                    "speaking rate; leave speed at 1.0.",
                    code="speed_unsupported",
                )
            decode_conf["alpha"] = 1.0 / options.speed
        self._check_tokens(text)
        with self._lock, seeded_griffin_lim(self.backend.seed):
            set_all_random_seed(self.backend.seed)
            output = self.backend(text, decode_conf=decode_conf or None, **voice.inputs())
        return output["wav"].detach().reshape(-1).float().cpu().numpy()

    def _check_tokens(self, text: str) -> None:
        """Refuse text that gives no token, or a word or character the model has none for.

        Raises:
            SynthesisInputError: ``nothing_to_speak`` or ``unknown_words`` (naming them).
        """
        preprocess = self.backend.preprocess_fn
        ids = preprocess("<text>", {"text": text})["text"]
        if not ids.size:
            raise SynthesisInputError(
                "The text has nothing this model can speak.", code="nothing_to_speak"
            )
        converter = getattr(preprocess, "token_id_converter", None)
        unk_id = getattr(converter, "unk_id", None)
        if unk_id is None or not (ids == unk_id).any():
            return
        cleaned = preprocess.text_cleaner(text) if preprocess.text_cleaner else text
        unknown = sorted(
            {t for t in preprocess.tokenizer.text2tokens(cleaned) if t not in converter.token2id}
        )
        words = self.words()
        known = f"; it says only these words: {' '.join(words)}" if words else ""
        raise SynthesisInputError(
            f"This model cannot say {', '.join(repr(t) for t in unknown[:10])}: it has no token "
            f"for {'them' if len(unknown) > 1 else 'it'}{known}.",
            code="unknown_words",
        )

    def words(self) -> tuple[str, ...]:
        """The words of a model with word tokens and a small vocabulary (else empty)."""
        if self.backend.train_args.token_type != "word":
            return ()
        tokens = self.backend.train_args.token_list
        found = tuple(t for t in tokens if not SPECIAL_SYMBOL.fullmatch(str(t)))
        return found if len(found) <= MAX_LISTED_WORDS else ()


@contextlib.contextmanager
def seeded_griffin_lim(seed: int) -> Iterator[None]:
    """Within: Griffin-Lim (espnet2's vocoder of last resort) draws its phases from ``seed``.

    librosa (0.10 and later) draws Griffin-Lim's initial phases from a fresh, unseeded
    generator unless it is given a ``random_state``, and espnet2's ``griffin_lim`` passes
    none: ``Text2Speech`` with a Griffin-Lim vocoder answers differently on every call,
    ``always_fix_seed`` or not. Here ``librosa.griffinlim`` gets ``random_state=seed``
    (process-wide, until the block ends: callers hold the executor's lock).
    """
    import librosa

    original = librosa.griffinlim
    librosa.griffinlim = functools.partial(original, random_state=seed)
    try:
        yield
    finally:
        librosa.griffinlim = original


def unloadable_vocoder(options: Mapping[str, Any]) -> str | None:
    """Why ``Text2Speech(**options)`` cannot load its vocoder here, or None when it can.

    espnet2's own joint models (VITS, JETS, FastSpeech2 + HiFi-GAN) and Griffin-Lim load; a
    separate vocoder trained with the ``parallel_wavegan`` package does not (see
    :data:`PARALLEL_WAVEGAN_SUFFIX`).
    """
    vocoder_file = str(options.get("vocoder_file") or "")
    if not vocoder_file.endswith(PARALLEL_WAVEGAN_SUFFIX):
        return None
    return (
        f"Its vocoder {vocoder_file.rsplit('/', 1)[-1]} is a parallel_wavegan checkpoint; "
        "espnet2 loads those with the parallel_wavegan package, whose newest release (0.6.1) "
        "does not import with SciPy >= 1.13 (it needs scipy.signal.kaiser). Serve the model "
        "with Griffin-Lim (drop vocoder_file) or as a joint text-to-wav model."
    )


def _is_joint(model: Any) -> bool:
    """Whether a model is espnet2's ``JointText2Wav`` (text-to-mel and a vocoder in one)."""
    return type(model).__name__ == "JointText2Wav"


def _voices(backend: Any, session: Any) -> dict[str, Voice]:
    """The bundle's named voices, the first the default; one ``default`` voice if none."""
    declared = (getattr(session, "bundle_metadata", None) or {}).get(VOICES_KEY) or {}
    if not isinstance(declared, Mapping):
        raise ValueError(f"meta.yaml's {VOICES_KEY!r} must map voice names to their inputs.")
    root = Path(getattr(session, "bundle_root", None) or ".")
    voices = {str(name): _voice(str(name), fields, root) for name, fields in declared.items()}
    if not voices:
        if backend.use_spembs:
            raise ValueError(
                "The model needs a speaker embedding and its bundle names no voice with "
                f"one: add {VOICES_KEY}: {{name: {{spembs: path/to/xvector.npy}}}} to meta.yaml."
            )
        voices = {DEFAULT_VOICE: Voice(DEFAULT_VOICE, sid=0 if backend.use_sids else None)}
    return voices


def _voice(name: str, fields: Any, root: Path) -> Voice:
    """One declared voice; a speaker embedding is read from its bundle-relative file."""
    if not isinstance(fields, Mapping) or not set(fields) <= set(VOICE_FIELDS) or not fields:
        raise ValueError(
            f"Voice {name!r} in meta.yaml must give one or more of {', '.join(VOICE_FIELDS)}."
        )
    spembs = None
    if "spembs" in fields:
        spembs = np.load(root / str(fields["spembs"])).astype(np.float32).reshape(-1)
    return Voice(
        name,
        sid=None if fields.get("sid") is None else int(fields["sid"]),
        lid=None if fields.get("lid") is None else int(fields["lid"]),
        spembs=spembs,
    )
