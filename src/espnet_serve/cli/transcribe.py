"""``espnet-serve transcribe FILE``: a recording of any length to text, JSON or subtitles."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE
from espnet_serve.bundle.usercode import TRUST_FLAG
from espnet_serve.cli.quiet import library_output_to_stderr
from espnet_serve.pipeline.subtitles import to_srt, to_vtt
from espnet_serve.pipeline.transcriber import DEFAULT_BATCH_SIZE, Transcriber
from espnet_serve.pipeline.types import Transcript

FORMATS = ("text", "json", "srt", "vtt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``transcribe`` options on ``parser``."""
    parser.add_argument("file", type=Path, help="Audio file (WAV, FLAC, OGG, MP3, ...).")
    parser.add_argument(
        "--model",
        default=str(DEFAULT_MODEL_ARCHIVE),
        help="Packed archive, bundle directory or model tag (default: the embedded model).",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text; json (segments, and words with --words); srt or vtt subtitles.",
    )
    parser.add_argument("--words", action="store_true", help="Time each word (CTC alignment).")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"Segments decoded per call (default: {DEFAULT_BATCH_SIZE}).",
    )
    parser.add_argument(
        TRUST_FLAG,
        action="store_true",
        help="Let code shipped inside the model bundle run; needed for any --model but the "
        "embedded default.",
    )
    parser.add_argument("--no-progress", action="store_true", help="No progress bar on stderr.")


def render(transcript: Transcript, output_format: str) -> str:
    """The transcript as ``output_format`` (one of :data:`FORMATS`)."""
    if output_format == "srt":
        return to_srt(transcript.segments)
    if output_format == "vtt":
        return to_vtt(transcript.segments)
    if output_format == "json":
        body = {
            "text": transcript.text,
            "duration": transcript.duration,
            "segments": [segment.model_dump() for segment in transcript.segments],
        }
        return json.dumps(body, indent=2)
    return transcript.text


def main(args: argparse.Namespace) -> int:
    """Transcribe ``args.file`` and print it in ``args.format``."""
    from tqdm import tqdm

    from espnet_serve.bundle.store import load_local_session

    quiet = not getattr(args, "verbose", False)
    with (
        library_output_to_stderr(quiet),
        tempfile.TemporaryDirectory(prefix="espnet-serve-transcribe-") as tmp,
    ):
        session, spec = load_local_session(
            args.model, Path(tmp), trust_user_code=args.trust_user_code
        )
        transcriber = Transcriber(session, sample_rate=spec.sample_rate, batch_size=args.batch_size)
        with tqdm(unit="s", unit_scale=True, desc="audio", disable=args.no_progress or None) as bar:

            def progress(read: float, declared: float | None) -> None:
                bar.total = round(declared, 1) if declared else None
                bar.n = round(read, 1)
                bar.refresh()

            transcript = transcriber.transcribe(
                args.file, word_timestamps=args.words, progress=progress
            )
    sys.stdout.write(render(transcript, args.format) + "\n")
    return 0
