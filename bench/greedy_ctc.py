"""Greedy CTC against the embedded model's beam search: the same hypotheses on every set?

The embedded model is CTC-only (``ctc_weight: 1.0``). Each set is decoded twice by the
batched backend the server builds, 16 clips per call, from the same weights:
``BatchedSpeech2Text`` with Speech2Text's search at the bundle's beam (equal to espnet2's
``Speech2Text``, as the tests check), and with ``decoding: greedy_ctc`` (the best CTC path).
Reports, per set, the clips whose best hypothesis (text or token ids) differs, both word
error rates and both decoding times.

Sets: the packaged held-out set (espeak-ng voices) and every ``--set DIR`` (``<uttid>.flac``
and ``transcripts.tsv``): ``recipes/digits`` synthesises ``heldout_flite`` and
``heldout_festival`` and builds the real-speech dev sets (``digits_recipe.realdev``).

Example:
    python bench/greedy_ctc.py --set work/data/heldout_flite --set /tmp/realdev/real_dev \\
        --out bench/results/greedy-ctc.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import editdistance  # noqa: E402

from bench.report import emit  # noqa: E402
from espnet_serve import InferenceSession  # noqa: E402
from espnet_serve.assets import (  # noqa: E402
    DEFAULT_MODEL_ARCHIVE,
    HELDOUT_DIR,
    HeldoutClip,
    load_heldout,
)

BATCH = 16
SAMPLE_RATE = 16000  # the embedded model's
MODES = {"beam": {"decoding": "beam"}, "greedy": {"decoding": "greedy_ctc"}}


def backend(mode: str) -> Any:
    """The embedded model's batched backend, loaded as the server loads it, decoding as ``mode``."""
    session = InferenceSession.from_pretrained(
        str(DEFAULT_MODEL_ARCHIVE),
        trust_user_code=True,
        batched_backend=True,
        prefer_model_batch=True,
        max_bucket_size=BATCH,
        **MODES[mode],
    )
    return session.model


def decode_set(backends: dict[str, Any], clips: list[HeldoutClip]) -> dict[str, Any]:
    """Both decodings of one set: the clips whose best hypothesis differs, WER, seconds."""
    waves = [clip.read_audio(SAMPLE_RATE) for clip in clips]
    best: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    seconds: dict[str, float] = {}
    for mode, model in backends.items():
        best[mode], seconds[mode] = [], 0.0
        for start in range(0, len(waves), BATCH):
            began = time.perf_counter()
            outputs = model(waves[start : start + BATCH])
            seconds[mode] += time.perf_counter() - began
            best[mode] += [(nbest[0][0], tuple(nbest[0][2])) for nbest in outputs]
    words = sum(len(clip.text.split()) for clip in clips)
    differing = [
        {"uttid": clip.uttid, "ref": clip.text, "beam": b[0], "greedy": g[0]}
        for clip, b, g in zip(clips, best["beam"], best["greedy"], strict=True)
        if b != g
    ]
    return {
        "clips": len(clips),
        "audio_seconds": round(sum(len(w) for w in waves) / SAMPLE_RATE, 2),
        "differing": differing,
        "wer": {
            mode: round(
                sum(
                    editdistance.eval(clip.text.split(), text.split())
                    for clip, (text, _) in zip(clips, best[mode], strict=True)
                )
                / words,
                4,
            )
            for mode in backends
        },
        "decode_seconds": {mode: round(value, 3) for mode, value in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", type=Path, action="append", default=[], help="a set directory")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args()
    backends = {mode: backend(mode) for mode in MODES}
    sets = {"heldout (espeak-ng, packaged)": HELDOUT_DIR, **{str(d): d for d in args.set}}
    results = {
        name: decode_set(backends, load_heldout(directory=path)) for name, path in sets.items()
    }
    emit(
        {
            "model": str(DEFAULT_MODEL_ARCHIVE.name),
            "batch": BATCH,
            "sets": results,
            "differing_clips": sum(len(r["differing"]) for r in results.values()),
            "clips": sum(r["clips"] for r in results.values()),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
