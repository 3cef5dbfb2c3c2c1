"""The ``espnet-serve`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    from espnet_serve.cli import evaluate

    parser = subparsers.add_parser(
        "eval", help="Word error rate and real-time factor on the held-out set."
    )
    evaluate.add_arguments(parser)
    parser.set_defaults(handler=evaluate.main)


def _add_transcribe(subparsers: argparse._SubParsersAction) -> None:
    from espnet_serve.cli import transcribe

    parser = subparsers.add_parser(
        "transcribe", help="Transcribe a recording of any length (text, JSON, SRT or VTT)."
    )
    transcribe.add_arguments(parser)
    parser.set_defaults(handler=transcribe.main)


def _add_build(subparsers: argparse._SubParsersAction) -> None:
    from espnet_serve.cli import build

    parser = subparsers.add_parser(
        "build", help="Import a model into the BentoML store (--bento: and build a Bento)."
    )
    build.add_arguments(parser)
    parser.set_defaults(handler=build.main)
    default = subparsers.add_parser(
        "import-default",
        help="Import the embedded models (ASR, streaming ASR, voice) into the BentoML store.",
    )
    default.set_defaults(handler=build.import_default_main)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="espnet-serve", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_eval(subparsers)
    _add_transcribe(subparsers)
    _add_build(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
