"""``espnet-serve eval``: word error rate and real-time factor on the held-out set.

Decodes every held-out clip one by one through
``InferenceSession.from_pretrained`` with the bundle's own decoding settings
(unless ``--beam-size`` / ``--ctc-weight`` override them) and reports word
error rate (word-level edit distance over reference words), sentence error
rate and real-time factor (decoding time over audio duration).
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
from espnet_serve.bundle import BundleMetadata, inference_config_path
from espnet_serve.config import build_backend, load_inference_config
from espnet_serve.session import InferenceSession


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
        decoding_overrides: Decoding options that replaced the bundle's.
        errors: ``{"uttid", "ref", "hyp"}`` for each wrong utterance.
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
        help="Where archives are unpacked (default: a fresh temporary directory). A reused "
        "cache keeps the first unpack of an archive path, even if the archive changes.",
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
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    parser.add_argument(
        "--max-wer",
        type=float,
        default=None,
        help="Exit with status 1 when the word error rate (a fraction) is above this.",
    )


def load_session(
    model: str, cachedir: Path, overrides: Mapping[str, Any] | None = None
) -> InferenceSession:
    """Load a model with trusted user code, optionally replacing decoding options.

    Args:
        model: Archive, bundle directory or tag for ``InferenceSession.from_pretrained``.
        cachedir: The downloader's cache directory.
        overrides: ``model`` options of the inference config to replace
            (e.g. ``beam_size``); the backend is then rebuilt from the
            bundle's inference config with them.

    Returns:
        InferenceSession: The session.
    """
    session = InferenceSession.from_pretrained(
        model, trust_user_code=True, downloader_kwargs={"cachedir": str(cachedir)}
    )
    if overrides:
        metadata = BundleMetadata.model_validate(session.bundle_metadata)
        config_path = inference_config_path(session.artifacts, session.bundle_root, metadata)
        if config_path is None:
            raise ValueError(f"{model} has no inference config to override.")
        config = load_inference_config(config_path, bundle_root=session.bundle_root)
        config.model.update(overrides)
        session.model = build_backend(config)
    return session


def _hypothesis(result: Any) -> str:
    """The transcript in a session result (``output_fn`` dict or raw n-best list)."""
    if isinstance(result, Mapping):
        return str(result["text"])
    return str(result[0][0]) if result else ""


def evaluate(
    session: InferenceSession, clips: Sequence[HeldoutClip], *, model: str, load_seconds: float
) -> EvalReport:
    """Decode ``clips`` one by one and score them.

    Args:
        session: The loaded model.
        clips: Held-out clips.
        model: Model name for the report.
        load_seconds: Model load time for the report.

    Returns:
        EvalReport: The scores.
    """
    ref_words = word_errors = 0
    audio_seconds = decode_seconds = 0.0
    errors: list[dict[str, str]] = []
    for clip in clips:
        audio, sample_rate = clip.read_audio()
        start = time.perf_counter()
        hyp = _hypothesis(session(audio, idx=clip.uttid))
        decode_seconds += time.perf_counter() - start
        audio_seconds += audio.size / sample_rate
        ref = clip.text.split()
        ref_words += len(ref)
        word_errors += editdistance.eval(ref, hyp.split())
        if hyp.split() != ref:
            errors.append({"uttid": clip.uttid, "ref": clip.text, "hyp": hyp})
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
        errors=errors,
    )


def format_report(report: EvalReport) -> str:
    """Human-readable report: the scores, then one line per wrong utterance."""
    lines = [
        f"model: {report.model}",
        f"decoding overrides: {report.decoding_overrides or 'none (bundle defaults)'}",
        f"utterances: {report.count}  reference words: {report.ref_words}",
        f"WER: {100 * report.wer:.2f}% ({report.word_errors}/{report.ref_words})",
        f"SER: {100 * report.ser:.2f}% ({len(report.errors)}/{report.count})",
        f"RTF: {report.rtf:.4f} ({report.decode_seconds:.1f} s for {report.audio_seconds:.1f} s"
        f" of audio; model load {report.load_seconds:.1f} s)",
    ]
    lines += [f"  {e['uttid']}: ref={e['ref']!r} hyp={e['hyp']!r}" for e in report.errors]
    return "\n".join(lines)


@contextlib.contextmanager
def _library_output_to_stderr(quiet: bool) -> Iterator[None]:
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
        _library_output_to_stderr(quiet),
        tempfile.TemporaryDirectory(prefix="espnet-serve-eval-") as tmp,
    ):
        start = time.perf_counter()
        session = load_session(args.model, args.cachedir or Path(tmp), overrides)
        load_seconds = time.perf_counter() - start
        report = evaluate(session, clips, model=args.model, load_seconds=load_seconds)
    report.decoding_overrides = overrides
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    return int(args.max_wer is not None and report.wer > args.max_wer)
