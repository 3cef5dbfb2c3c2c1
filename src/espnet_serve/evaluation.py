"""``espnet-serve eval``: word error rate and real-time factor on the held-out set.

Every clip goes through :func:`espnet_serve.ingest.read_audio_file`, which
mixes it down to mono and resamples it to the model's rate (its
``frontend_conf.fs``), so a held-out set at any sample rate scores like one at
the model's own. Clips are decoded in batches through the batched backend
(``BatchedSpeech2Text``, same hypotheses as ``Speech2Text``), or with
``--reference`` one by one through espnet2's ``Speech2Text``, with the
bundle's own decoding settings unless ``--beam-size`` / ``--ctc-weight``
override them. Reported: word error rate (word-level edit distance over
reference words), sentence error rate and real-time factor (decoding time
over audio duration).

Only the embedded default model's code is trusted without asking: any other
``--model`` whose bundle ships code needs ``--trust-user-code``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import editdistance

from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE, HELDOUT_DIR, HeldoutClip, load_heldout
from espnet_serve.bundle import DEFAULT_SAMPLE_RATE
from espnet_serve.errors import UntrustedUserCodeError
from espnet_serve.ingest import AudioInputError
from espnet_serve.session import InferenceSession
from espnet_serve.spec import ModelSpec
from espnet_serve.store import TRUST_FLAG, session_from_bundle, stage_bundle

DEFAULT_BATCH_SIZE = 16


@dataclass
class EvalReport:
    """Scores of one evaluation run.

    Attributes:
        model: The evaluated model (archive, directory or tag).
        count: Number of utterances.
        ref_words: Number of reference words.
        word_errors: Word-level edit distance summed over utterances.
        wer: ``word_errors / ref_words``.
        ser: Fraction of utterances whose hypothesis differs from the reference.
        rtf: Decoding seconds per second of audio.
        audio_seconds: Total audio duration.
        decode_seconds: Total decoding time (model call and ``output_fn``).
        load_seconds: Time to unpack and load the model.
        mode: ``batched`` (the batched backend) or ``reference`` (``Speech2Text``).
        batch_size: Clips per backend call (1 for ``reference``).
        sample_rate: The model's rate, which every clip was resampled to.
        decoding_overrides: Decoding options that replaced the bundle's.
        errors: ``{"uttid", "ref", "hyp"}`` for each wrong utterance, plus
            ``"error"`` for one the model failed on (its ``hyp`` is empty).
    """

    model: str
    count: int
    ref_words: int
    word_errors: int
    wer: float
    ser: float
    rtf: float
    audio_seconds: float
    decode_seconds: float
    load_seconds: float
    mode: str = "batched"
    batch_size: int = DEFAULT_BATCH_SIZE
    sample_rate: int = DEFAULT_SAMPLE_RATE
    decoding_overrides: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``eval`` options on ``parser``."""
    parser.add_argument(
        "--model",
        default=str(DEFAULT_MODEL_ARCHIVE),
        help="Packed archive, bundle directory or model tag (default: the embedded model).",
    )
    parser.add_argument(
        "--cachedir",
        type=Path,
        default=None,
        help="espnet_model_zoo's download cache for a model tag (default: its own). Archives "
        "and directories are staged afresh in a temporary directory on every run.",
    )
    parser.add_argument(
        "--heldout-dir",
        type=Path,
        default=HELDOUT_DIR,
        help="Held-out set: <uttid>.flac and transcripts.tsv (default: the packaged one).",
    )
    parser.add_argument("--limit", type=int, default=None, help="Decode only the first N clips.")
    parser.add_argument("--beam-size", type=int, default=None, help="Override the beam size.")
    parser.add_argument(
        "--ctc-weight",
        type=float,
        default=None,
        help="Override the CTC weight (1.0 with --beam-size 1: greedy CTC).",
    )
    parser.add_argument(
        TRUST_FLAG,
        action="store_true",
        help="Let code shipped inside the model bundle (its src/, e.g. an output_fn) run; "
        "needed for any --model but the embedded default.",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="Decode one clip per call with espnet2's Speech2Text (default: the batched backend).",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"Clips per call of the batched backend (default: {DEFAULT_BATCH_SIZE}).",
    )
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    parser.add_argument(
        "--max-wer",
        type=float,
        default=None,
        help="Exit with status 1 when the word error rate (a fraction) is above this.",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def is_default_model(model: str) -> bool:
    """Whether ``model`` is the embedded default archive (whose code is ours)."""
    path = Path(model).expanduser()
    return path.is_file() and path.resolve() == DEFAULT_MODEL_ARCHIVE.resolve()


def load_eval_session(
    model: str,
    workdir: Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    trust_user_code: bool = False,
    batched: bool = True,
    cachedir: Path | None = None,
) -> tuple[InferenceSession, ModelSpec]:
    """Load a model for evaluation the way the server loads it, with decoding overrides.

    The source is staged as the model store would hold it (``store.stage_bundle``:
    safe extraction, trust rules, digests, the recorded spec) under ``workdir``,
    and the session is built from that spec (``store.session_from_bundle``).

    Args:
        model: Archive, bundle directory or tag.
        workdir: Where the bundle is staged; it must outlive the session.
        overrides: ``model`` options of the inference config to replace
            (e.g. ``beam_size``).
        trust_user_code: Let the bundle's own code run (always allowed for
            the embedded default model).
        batched: Build the batched backend and batch ``forward_batch`` calls;
            else the config's per-utterance backend, one call per clip.
        cachedir: ``espnet_model_zoo``'s download cache (tags only).

    Returns:
        tuple[InferenceSession, ModelSpec]: The session and the model's spec.

    Raises:
        UntrustedUserCodeError: If the bundle ships code and
            ``trust_user_code`` is false for a model other than the default.
    """
    trusted = trust_user_code or is_default_model(model)
    bundle_dir = Path(tempfile.mkdtemp(prefix="bundle-", dir=workdir))
    try:
        spec, _ = stage_bundle(model, bundle_dir, trust_user_code=trusted, cachedir=cachedir)
    except UntrustedUserCodeError as exc:
        raise UntrustedUserCodeError(
            f"{model} ships code that would run while decoding (e.g. its output_fn); "
            f"pass {TRUST_FLAG} to allow it, if you trust where the model comes from."
        ) from exc
    session = session_from_bundle(
        bundle_dir,
        spec,
        name="eval",
        batched_backend=batched,
        prefer_model_batch=batched,
        **dict(overrides or {}),
    )
    return session, spec


def _hypothesis(result: Any) -> str:
    """The transcript in a session result (``output_fn`` dict or raw n-best list)."""
    if isinstance(result, Mapping):
        return str(result["text"])
    return str(result[0][0]) if result else ""


def _read_clips(clips: Sequence[HeldoutClip], sample_rate: int) -> list[Any]:
    """Each clip's audio at ``sample_rate``; a refused clip's error names its file."""
    audio = []
    for clip in clips:
        try:
            audio.append(clip.read_audio(sample_rate))
        except AudioInputError as exc:
            raise type(exc)(f"{clip.path}: {exc}") from exc
    return audio


def evaluate(
    session: InferenceSession,
    clips: Sequence[HeldoutClip],
    *,
    model: str,
    load_seconds: float,
    sample_rate: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> EvalReport:
    """Decode ``clips`` in chunks of ``batch_size`` and score them.

    A session built with ``prefer_model_batch`` decodes each chunk in one
    backend call; otherwise ``forward_batch`` makes one call per clip. A clip
    the model fails on counts as an empty hypothesis.

    Args:
        session: The loaded model.
        clips: Held-out clips.
        model: Model name for the report.
        load_seconds: Model load time for the report.
        sample_rate: The model's rate; clips are resampled to it.
        batch_size: Clips per ``forward_batch`` call.

    Returns:
        EvalReport: The scores.

    Raises:
        AudioInputError: If a clip is not acceptable audio.
    """
    ref_words = word_errors = 0
    audio_seconds = decode_seconds = 0.0
    errors: list[dict[str, str]] = []
    for start in range(0, len(clips), batch_size):
        chunk = clips[start : start + batch_size]
        audio = _read_clips(chunk, sample_rate)
        begin = time.perf_counter()
        results = session.forward_batch(
            audio, indices=[clip.uttid for clip in chunk], return_exceptions=True
        )
        decode_seconds += time.perf_counter() - begin
        audio_seconds += sum(samples.size for samples in audio) / sample_rate
        for clip, result in zip(chunk, results, strict=True):
            failed = isinstance(result, Exception)
            hyp = "" if failed else _hypothesis(result)
            ref = clip.text.split()
            ref_words += len(ref)
            word_errors += editdistance.eval(ref, hyp.split())
            if failed or hyp.split() != ref:
                error = {"uttid": clip.uttid, "ref": clip.text, "hyp": hyp}
                if failed:
                    error["error"] = f"{type(result).__name__}: {result}"
                errors.append(error)
    count = len(clips)
    return EvalReport(
        model=model,
        count=count,
        ref_words=ref_words,
        word_errors=word_errors,
        wer=word_errors / max(ref_words, 1),
        ser=len(errors) / max(count, 1),
        rtf=decode_seconds / max(audio_seconds, 1e-9),
        audio_seconds=audio_seconds,
        decode_seconds=decode_seconds,
        load_seconds=load_seconds,
        mode="batched" if session.prefer_model_batch else "reference",
        batch_size=batch_size if session.prefer_model_batch else 1,
        sample_rate=sample_rate,
        errors=errors,
    )


def format_report(report: EvalReport) -> str:
    """Human-readable report: the scores, then one line per wrong utterance."""
    lines = [
        f"model: {report.model}",
        f"decoding: {_mode_line(report)}; sample rate {report.sample_rate} Hz",
        f"decoding overrides: {report.decoding_overrides or 'none (bundle defaults)'}",
        f"utterances: {report.count}  reference words: {report.ref_words}",
        f"WER: {100 * report.wer:.2f}% ({report.word_errors}/{report.ref_words})",
        f"SER: {100 * report.ser:.2f}% ({len(report.errors)}/{report.count})",
        f"RTF: {report.rtf:.4f} ({report.decode_seconds:.1f} s for {report.audio_seconds:.1f} s"
        f" of audio; model load {report.load_seconds:.1f} s)",
    ]
    lines += [
        f"  {e['uttid']}: ref={e['ref']!r} hyp={e['hyp']!r}"
        + (f" ({e['error']})" if "error" in e else "")
        for e in report.errors
    ]
    return "\n".join(lines)


def _mode_line(report: EvalReport) -> str:
    if report.mode == "reference":
        return "reference Speech2Text, one clip per call"
    return f"batched backend, up to {report.batch_size} clips per call"


@contextlib.contextmanager
def library_output_to_stderr(quiet: bool) -> Iterator[None]:
    """Send library prints to stderr and, when ``quiet``, drop INFO logs (per-utterance chatter).

    espnet2 logs every beam search at INFO level and prints at import time;
    the report on stdout stays clean (``--json`` output is parseable).
    """
    root = logging.getLogger()
    level = root.level
    if quiet:
        root.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        root.setLevel(level)


def main(args: argparse.Namespace) -> int:
    """Run the evaluation described by the parsed ``args``.

    Returns:
        int: 0, or 1 when ``--max-wer`` is given and exceeded.
    """
    overrides = {
        key: value
        for key, value in (("beam_size", args.beam_size), ("ctc_weight", args.ctc_weight))
        if value is not None
    }
    clips = load_heldout(args.limit, directory=args.heldout_dir)
    quiet = not getattr(args, "verbose", False)
    with (
        library_output_to_stderr(quiet),
        tempfile.TemporaryDirectory(prefix="espnet-serve-eval-") as tmp,
    ):
        start = time.perf_counter()
        session, spec = load_eval_session(
            args.model,
            Path(tmp),
            overrides,
            trust_user_code=args.trust_user_code,
            batched=not args.reference,
            cachedir=args.cachedir,
        )
        load_seconds = time.perf_counter() - start
        report = evaluate(
            session,
            clips,
            model=args.model,
            load_seconds=load_seconds,
            sample_rate=spec.sample_rate,
            batch_size=args.batch_size,
        )
    report.decoding_overrides = overrides
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    return int(args.max_wer is not None and report.wer > args.max_wer)
