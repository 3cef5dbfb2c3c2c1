"""Plot several ``bench/serve.py`` results side by side: served / in-process and p95 per level.

python bench/compare_serve.py results/refactor-26/*.json --out results/refactor-26/compare.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path, nargs="+", help="bench/serve.py JSON files")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for path in args.results:
        document = json.loads(path.read_text())
        levels = document["served"]["levels"]
        x = [level["concurrency"] for level in levels]
        style = "o--" if "before" in document["label"] else "s-"
        ratio = [level["served_over_in_process"] for level in levels]
        left.plot(x, ratio, style, label=document["label"])
        right.plot(x, [level["p95_seconds"] for level in levels], style, label=document["label"])
        print(document["label"], " ".join(f"{v:.2f}" for v in ratio))
    left.set(xscale="log", xlabel="concurrent clients", ylabel="served / in-process, same batch")
    right.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p95 latency (s)")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
