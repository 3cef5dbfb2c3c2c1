"""Greedy CTC against the embedded model's beam search: the same hypotheses on every set?

The embedded model is CTC-only (``ctc_weight: 1.0``). Each set is decoded twice through the
segment pipeline, as the server decodes, 16 clips per call, from the same weights:
``BatchedSpeech2Text`` with Speech2Text's search at the bundle's beam (equal to espnet2's
``Speech2Text``, as the tests check), and with ``decoding: greedy_ctc`` (the best CTC path).
Reports, per set, the clips whose token ids differ, both word error rates and both
decoding times.

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
from espnet_serve.audio.segmenter import AudioSegment  # noqa: E402
from espnet_serve.pipeline.decode import SegmentDecoder  # noqa: E402
from espnet_serve.pipeline.types import Segment  # noqa: E402

BATCH = 16
SAMPLE_RATE = 16000  # the embedded model's
MODES = {"beam": {"decoding": "beam"}, "greedy": {"decoding": "greedy_ctc"}}


def decoder(mode: str) -> SegmentDecoder:
    """The embedded model loaded as the server loads it, decoding as ``mode`` says."""
    session = InferenceSession.from_pretrained(
        str(DEFAULT_MODEL_ARCHIVE),
        trust_user_code=True,
        batched_backend=True,
        prefer_model_batch=True,
        max_bucket_size=BATCH,
        **MODES[mode],
    )
    return SegmentDecoder(session, SAMPLE_RATE)


def decode_set(decoders: dict[str, SegmentDecoder], clips: list[HeldoutClip]) -> dict[str, Any]:
    """Both decodings of one set: differing clips, word errors, seconds."""
    waves = [clip.read_audio(SAMPLE_RATE) for clip in clips]
    tokens: dict[str, list[tuple[int, ...] | None]] = {}
    texts: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for mode, segment_decoder in decoders.items():
        tokens[mode], texts[mode], seconds[mode] = [], [], 0.0
        for start in range(0, len(waves), BATCH):
            segments = [
                AudioSegment.whole(start + i, wave, SAMPLE_RATE)
                for i, wave in enumerate(waves[start : start + BATCH])
            ]
            began = time.perf_counter()
            outcomes = segment_decoder.decode(segments)
            seconds[mode] += time.perf_counter() - began
            for outcome in outcomes:
                assert isinstance(outcome, Segment), outcome
                tokens[mode].append(outcome.tokens)
                texts[mode].append(outcome.text)
    words = sum(len(clip.text.split()) for clip in clips)
    differing = [
        {"uttid": clip.uttid, "ref": clip.text, "beam": b, "greedy": g}
        for clip, b, g, tb, tg in zip(
            clips, texts["beam"], texts["greedy"], tokens["beam"], tokens["greedy"], strict=True
        )
        if tb != tg
    ]
    return {
        "clips": len(clips),
        "audio_seconds": round(sum(len(w) for w in waves) / SAMPLE_RATE, 2),
        "differing": differing,
        "wer": {
            mode: round(
                sum(
                    editdistance.eval(clip.text.split(), text.split())
                    for clip, text in zip(clips, texts[mode], strict=True)
                )
                / words,
                4,
            )
            for mode in decoders
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
    decoders = {mode: decoder(mode) for mode in MODES}
    sets = {"heldout (espeak-ng, packaged)": HELDOUT_DIR, **{str(d): d for d in args.set}}
    results = {
        name: decode_set(decoders, load_heldout(directory=path)) for name, path in sets.items()
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
