r"""Score bundles on every held-out set and the real-speech dev set: a Markdown table.

Each model is loaded once, the way ``espnet-serve eval`` loads it (batched
backend, the bundle's own decoding), and decodes every set.

Usage (from ``recipes/digits``)::

    ../../.venv/bin/python -m digits_recipe.score \
        --model before=../../src/espnet_serve/assets/digits_asr.tar.gz \
        --model after=work/digits_asr.tar.gz \
        work/data/heldout work/data/heldout_flite work/data/heldout_festival work/data/real_dev
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from espnet_serve.assets import load_heldout
from espnet_serve.bundle.store import load_local_session
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.evaluate import EvalReport, evaluate


def score(models: Mapping[str, Path], set_dirs: Sequence[Path]) -> dict[str, list[EvalReport]]:
    """Evaluate each model on each set.

    Args:
        models: Label to bundle archive (its code is trusted: this recipe's).
        set_dirs: Set directories (``<uttid>.flac`` + ``transcripts.tsv``).

    Returns:
        dict[str, list[EvalReport]]: Per label, one report per set, in order.
    """
    reports: dict[str, list[EvalReport]] = {}
    for label, archive in models.items():
        with tempfile.TemporaryDirectory(prefix="digits-score-") as tmp:
            start = time.perf_counter()
            session, spec = load_local_session(str(archive), Path(tmp), trust_user_code=True)
            load_seconds = time.perf_counter() - start
            decoder = SegmentDecoder(session, spec.sample_rate)
            reports[label] = [
                evaluate(
                    decoder,
                    load_heldout(directory=set_dir),
                    model=str(archive),
                    load_seconds=load_seconds,
                )
                for set_dir in set_dirs
            ]
    return reports


def markdown_table(set_dirs: Sequence[Path], reports: Mapping[str, list[EvalReport]]) -> str:
    """One row per set, a WER and an SER column per model."""
    labels = list(reports)
    header = ["set", "clips", *(f"{label} {kind}" for label in labels for kind in ("WER", "SER"))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, set_dir in enumerate(set_dirs):
        first = reports[labels[0]][index]
        cells = [set_dir.name, str(first.count)]
        for label in labels:
            r = reports[label][index]
            cells.append(f"{r.wer:.2%} ({r.word_errors}/{r.ref_words})")
            cells.append(f"{r.ser:.2%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _labelled(text: str) -> tuple[str, Path]:
    """Parse ``label=path``."""
    label, sep, path = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected LABEL=ARCHIVE, got {text!r}")
    return label, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=_labelled, action="append", required=True, help="LABEL=ARCHIVE"
    )
    parser.add_argument("set_dirs", type=Path, nargs="+", help="Set directories to score.")
    args = parser.parse_args(argv)
    reports = score(dict(args.model), args.set_dirs)
    print(markdown_table(args.set_dirs, reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
