"""``espnet-serve eval``: word error rate and real-time factor on the held-out set.

Clips are decoded in batches through the batched backend (``BatchedSpeech2Text``,
same hypotheses as ``Speech2Text``), or with ``--reference`` one by one through
espnet2's ``Speech2Text``, with the bundle's own decoding settings unless
``--beam-size`` / ``--ctc-weight`` override them; scoring is
:func:`espnet_serve.pipeline.evaluate.evaluate`.

Only the embedded default model's code is trusted without asking: any other
``--model`` whose bundle ships code needs ``--trust-user-code``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE, HELDOUT_DIR, load_heldout
from espnet_serve.bundle.store import load_local_session
from espnet_serve.bundle.usercode import TRUST_FLAG
from espnet_serve.cli.quiet import library_output_to_stderr
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.evaluate import DEFAULT_BATCH_SIZE, EvalReport, evaluate


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
        help="Override the CTC weight (1.0: CTC only).",
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
        session, spec = load_local_session(
            args.model,
            Path(tmp),
            overrides,
            trust_user_code=args.trust_user_code,
            batched=not args.reference,
            cachedir=args.cachedir,
        )
        load_seconds = time.perf_counter() - start
        report = evaluate(
            SegmentDecoder(session, spec.sample_rate),
            clips,
            model=args.model,
            load_seconds=load_seconds,
            batch_size=args.batch_size,
        )
    report.decoding_overrides = overrides
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    return int(args.max_wer is not None and report.wer > args.max_wer)
