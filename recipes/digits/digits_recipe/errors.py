"""What kind of word errors a model makes: substitutions, deletions, insertions, and where.

Each wrong hypothesis is aligned to its reference (a Levenshtein alignment, substitutions
preferred at equal cost). An insertion is at an edge when it comes before the first or after
the last reference word, else in a pause between two words.

Usage (from ``recipes/digits``, after ``digits_recipe.score`` wrote its reports)::

    ../../.venv/bin/python -m digits_recipe.errors work/digits_asr.tar.gz work/data/real_dev
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

SUB, DEL, INS = "substitution", "deletion", "insertion"
INS_EDGE, INS_PAUSE = "insertion at an edge", "insertion in a pause"
KINDS = (SUB, DEL, INS_EDGE, INS_PAUSE)


def alignment_errors(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, str]]:
    """The errors of ``hyp`` against ``ref``, in order: ``(kind, word)``.

    The word is the hypothesis' for an insertion or a substitution, the reference's for a
    deletion.
    """
    rows, cols = len(ref) + 1, len(hyp) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i][j] = min(
                cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]),
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
            )
    errors: list[tuple[str, str]] = []
    i, j = len(ref), len(hyp)
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] != hyp[j - 1]:
                errors.append((SUB, hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            errors.append((DEL, ref[i - 1]))
            i -= 1
        else:
            errors.append((INS_EDGE if i in (0, len(ref)) else INS_PAUSE, hyp[j - 1]))
            j -= 1
    return errors[::-1]


def breakdown(pairs: Sequence[tuple[str, str]]) -> Counter[str]:
    """Errors by kind over ``(reference, hypothesis)`` pairs, and the words inserted."""
    counts: Counter[str] = Counter()
    for ref, hyp in pairs:
        for kind, word in alignment_errors(ref.split(), hyp.split()):
            counts[kind] += 1
            if kind in (INS_EDGE, INS_PAUSE):
                counts[f"inserted {word}"] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Print each set's breakdown for one bundle."""
    from digits_recipe.score import score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="The bundle to score.")
    parser.add_argument("set_dirs", type=Path, nargs="+", help="Set directories.")
    args = parser.parse_args(argv)
    (reports,) = score({"model": args.archive}, args.set_dirs).values()
    for set_dir, report in zip(args.set_dirs, reports, strict=True):
        counts = breakdown([(e["ref"], e["hyp"]) for e in report.errors])
        kinds = ", ".join(f"{kind} {counts[kind]}" for kind in KINDS)
        inserted = sorted((k for k in counts if k.startswith("inserted ")), key=counts.get)
        words = ", ".join(f"{k[len('inserted ') :]} {counts[k]}" for k in reversed(inserted))
        print(f"{set_dir.name}: {report.word_errors}/{report.ref_words} words; {kinds}")
        if words:
            print(f"  inserted: {words}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
