"""Throughput benchmark of the batched ASR backend against per-sample Speech2Text.

One run measures, on the same utterances and in one process:

(a) ``Speech2Text`` called once per utterance;
(b) ``InferenceSession.forward_batch`` over a ``Speech2Text`` session with
    ``prefer_model_batch=True`` (the reference fallback: the list call fails,
    then per-sample);
(c) ``BatchedSpeech2Text`` called with batches of 1, 4, 16, 32 utterances;
(d) the encoder-only floor: ``asr_model.encode`` on the same padded batches;
(e) at batch 16, the same backend without its early stop (the search runs
    until ``end_detect`` or ``maxlen``, as ``Speech2Text``'s does), and greedy
    CTC (``decoding: greedy_ctc``) where the model has a CTC head.

Batches are consecutive utterances in held-out order, as a server's adaptive
batcher would form them (no global length sort). For each: wall time,
audio-seconds per second, real-time factor, peak RSS (and CUDA peak memory),
and agreement of the best hypothesis with (a). Each time is the median of
``--repeats`` rounds, every configuration run once per round (one pass over
128 short clips takes under a second, and a shared machine's speed drifts by a
third within minutes: interleaved, the drift reaches every configuration alike). Writes
``<out>/<label>.json`` and ``<out>/<label>.png``; ``--profile`` also writes a
cProfile listing of (c) at batch 16.

Examples:
    python bench/run.py --model default --model random-large
    python bench/run.py --model default --device cuda --label gpu-h100
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import psutil
import torch

from devkit.random_init import write_random_asr_experiment
from devkit.recipes import LIBRISPEECH_100_TRAIN_ASR

BATCH_SIZES = (1, 4, 16, 32)
FALLBACK_BATCH = 16
VARIANT_BATCH = 16  # batch size of the full-search and greedy-CTC rows
SAMPLE_RATE = 16000
# Random-init decoders never emit <eos>, so every hypothesis runs to maxlen =
# maxlenratio x encoder frames. 0.13 x 25 frames/s (40 ms subsampling) = 3.25
# tokens/s: the rate of a 5000-unit BPE on read English speech (LibriSpeech:
# ~2.7 words/s, ~1.2 BPE-5k units per word).
RANDOM_LARGE = {
    "recipe": LIBRISPEECH_100_TRAIN_ASR,
    "n_mels": 80,
    "vocab": 5000,
    "decoding": {"beam_size": 10, "ctc_weight": 0.3, "maxlenratio": 0.13},
}


@dataclass
class Run:
    """One measured configuration."""

    name: str
    kind: str
    batch_size: int
    wall_s: float
    audio_s: float
    peak_rss_mb: float
    rss_growth_mb: float
    cuda_peak_mb: float | None = None
    agreement: float | None = None
    audio_s_per_s: float = field(init=False)
    rtf: float = field(init=False)

    def __post_init__(self) -> None:
        self.audio_s_per_s = self.audio_s / self.wall_s
        self.rtf = self.wall_s / self.audio_s


@dataclass
class Model:
    """Artifacts and decoding options of the benchmarked model."""

    name: str
    asr_train_config: Path
    asr_model_file: Path
    decoding: dict[str, Any]
    # What keeps the files alive (the session whose view they are in), if anything.
    files_owner: Any = None


class PeakRss:
    """Peak resident memory of this process while the context is open (sampled every 5 ms)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of ``items`` of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def synchronize(device: str) -> None:
    """Wait for queued CUDA work so wall times are complete."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Config:
    """One configuration to time: ``fn`` decodes (or encodes) every clip once."""

    name: str
    kind: str
    batch_size: int
    fn: Callable[[], list[Any] | None]
    warmup: Callable[[], Any]
    checked: bool = True  # compare its best hypotheses with the reference


def measure_all(
    configs: list[Config], audio_s: float, device: str, repeats: int
) -> tuple[list[Run], dict[str, list[Any] | None]]:
    """Time every configuration ``repeats`` times, interleaved, and keep each one's median.

    Each round runs every configuration once, so a change of the machine's speed
    during the run (a shared 2-core VM drifts by a third within minutes) reaches
    them alike and the ratios between them hold. Memory is tracked per run.
    """
    for config in configs:
        config.warmup()
    walls: dict[str, list[float]] = {c.name: [] for c in configs}
    start_rss: dict[str, int] = {}
    peak_rss: dict[str, int] = {}
    cuda_peak: dict[str, float] = {}
    outputs: dict[str, list[Any] | None] = {}
    for _ in range(repeats):
        for config in configs:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            synchronize(device)
            with PeakRss() as rss:
                start = time.perf_counter()
                outputs[config.name] = config.fn()
                synchronize(device)
                walls[config.name].append(time.perf_counter() - start)
            start_rss[config.name] = min(start_rss.get(config.name, rss.start), rss.start)
            peak_rss[config.name] = max(peak_rss.get(config.name, 0), rss.peak)
            if device.startswith("cuda"):
                peak = torch.cuda.max_memory_allocated() / 2**20
                cuda_peak[config.name] = max(cuda_peak.get(config.name, 0.0), peak)
    runs = []
    for config in configs:
        wall = float(np.median(walls[config.name]))
        run = Run(
            name=config.name,
            kind=config.kind,
            batch_size=config.batch_size,
            wall_s=wall,
            audio_s=audio_s,
            peak_rss_mb=peak_rss[config.name] / 2**20,
            rss_growth_mb=(peak_rss[config.name] - start_rss[config.name]) / 2**20,
            cuda_peak_mb=cuda_peak.get(config.name),
        )
        print(
            f"  {config.name:<28} {wall:8.2f} s  {run.audio_s_per_s:8.1f} audio-s/s  "
            f"RTF {run.rtf:.4f}",
            flush=True,
        )
        runs.append(run)
    return runs, outputs


def best_tokens(nbest: Any) -> list[int] | None:
    """Token ids of the best hypothesis of an n-best list (``None`` for an error or no result)."""
    if not isinstance(nbest, list) or not nbest:
        return None
    return list(nbest[0][2])


def agreement(outputs: list[Any], reference: list[Any]) -> float:
    """Fraction of utterances whose best hypothesis equals the reference's."""
    same = sum(best_tokens(a) == best_tokens(b) for a, b in zip(outputs, reference, strict=True))
    return same / len(reference)


def load_clips(source: str, limit: int) -> list[np.ndarray]:
    """Held-out clips of the default model at 16 kHz, any file rate (``heldout``), or noise."""
    if source == "heldout":
        from espnet_serve.assets import load_heldout

        return [clip.read_audio(SAMPLE_RATE) for clip in load_heldout(limit)]
    rng = np.random.default_rng(0)
    lengths = rng.integers(SAMPLE_RATE // 2, 4 * SAMPLE_RATE, size=limit)
    return [(rng.standard_normal(int(n)) * 0.05).astype(np.float32) for n in lengths]


def default_model(workdir: Path) -> Model:
    """The embedded default model, staged and loaded as the server loads it (its spec)."""
    from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE
    from espnet_serve.bundle.config import load_inference_config
    from espnet_serve.bundle.store import session_from_bundle, stage_bundle

    bundle_dir = workdir / "default"
    spec, _ = stage_bundle(DEFAULT_MODEL_ARCHIVE, bundle_dir, trust_user_code=True)
    session = session_from_bundle(bundle_dir, spec, name="bench")
    view = session.bundle_root
    inference = load_inference_config(view / spec.inference_config, bundle_root=view)
    decoding = {
        key: value
        for key, value in inference.model.items()
        if key in ("beam_size", "ctc_weight", "penalty", "maxlenratio", "minlenratio", "nbest")
    }
    return Model(
        "default",
        Path(session.artifacts["asr_train_config"]),
        Path(session.artifacts["asr_model_file"]),
        decoding,
        files_owner=session,
    )


def random_large_model(workdir: Path) -> Model:
    """librispeech_100's default 12-block conformer / 6-block decoder, random-init, with a
    5000-token vocabulary."""
    conf = RANDOM_LARGE
    tokens = ["<blank>", "<unk>", *(f"t{i}" for i in range(conf["vocab"] - 3)), "<sos/eos>"]
    experiment = write_random_asr_experiment(
        workdir / "random-large",
        token_list=tokens,
        n_mels=conf["n_mels"],
        **conf["recipe"].options,
    )
    return Model(
        "random-large",
        experiment.asr_train_config,
        experiment.asr_model_file,
        dict(conf["decoding"]),
    )


def profile_batched(backend: Any, clips: list[np.ndarray], batch_size: int, path: Path) -> dict:
    """cProfile the batched backend at ``batch_size``; write the listing, return a summary."""
    profiler = cProfile.Profile()
    profiler.enable()
    for chunk in chunks(clips, batch_size):
        backend(chunk)
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)
    path.write_text(stream.getvalue(), encoding="utf-8")
    cumulative: dict[str, float] = {}
    for (file, _, func), entry in stats.stats.items():  # type: ignore[attr-defined]
        key = f"{Path(file).name}:{func}"
        cumulative[key] = max(cumulative.get(key, 0.0), entry[3])
    total = cumulative.get("speech2text.py:batch", 0.0)
    parts = {
        "front end (per utterance)": cumulative.get("speech2text.py:_features", 0.0),
        "encoder (padded batch)": cumulative.get("encoding.py:encode_padded", 0.0),
        "beam search": cumulative.get("beam_search.py:_search", 0.0),
        "  decoder steps": cumulative.get("decoder_step.py:__call__", 0.0),
        "  CTC prefix scoring": cumulative.get("ctc_prefix.py:score", 0.0),
        "  end handling and state selection": cumulative.get("beam_search.py:_post_process", 0.0)
        + cumulative.get("beam_search.py:_advance", 0.0),
    }
    return {"total_s": total, "parts_s": parts}


def model_facts(asr_model: Any) -> dict[str, Any]:
    """Size and shape of the model, for the results file."""
    return {
        "parameters_m": sum(p.numel() for p in asr_model.parameters()) / 1e6,
        "vocab": len(asr_model.token_list),
        "encoder": type(asr_model.encoder).__name__,
        "encoder_blocks": len(getattr(asr_model.encoder, "encoders", [])),
        "encoder_dim": asr_model.encoder.output_size(),
        "decoder": type(asr_model.decoder).__name__,
        "decoder_blocks": len(getattr(asr_model.decoder, "decoders", [])),
    }


def bench_model(model: Model, clips: list[np.ndarray], args: argparse.Namespace) -> dict:
    """Measure (a)-(e) for one model; return the results document."""
    from espnet2.bin.asr_inference import Speech2Text

    from espnet_serve import InferenceSession
    from espnet_serve.backends import BatchedSpeech2Text
    from espnet_serve.backends.beam_search import BatchJointSearch

    device = args.device
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE
    decoding = {**model.decoding, "device": device}
    s2t = Speech2Text(model.asr_train_config, model.asr_model_file, **decoding)
    asr_model = s2t.asr_model
    print(f"{model.name}: {len(clips)} utterances, {audio_s:.1f} s of audio", flush=True)

    session = InferenceSession(s2t, prefer_model_batch=True)

    def fallback() -> list[Any]:
        with contextlib.redirect_stderr(io.StringIO()):
            return [o for c in chunks(clips, FALLBACK_BATCH) for o in session.forward_batch(c)]

    # One backend (one copy of the model) for every batch size: calls of `size`
    # utterances, each one bucket.
    backend = BatchedSpeech2Text(
        model.asr_train_config, model.asr_model_file, dtype=args.dtype, **decoding
    )
    early_stop = backend.search
    full_search = BatchJointSearch(
        asr_model, replace(backend.options, stop_when_settled=False), backend.lm
    )

    def batched(size: int, search: Any = early_stop, part: list[Any] = clips) -> list[Any]:
        backend.max_bucket_size, backend.search = size, search
        try:
            return [o for c in chunks(part, size) for o in backend(c)]
        finally:
            backend.search = early_stop

    def encode_only(size: int, part: list[Any] = clips) -> None:
        with torch.inference_mode():
            for chunk in chunks(part, size):
                waves = [torch.from_numpy(c) for c in chunk]
                lengths = torch.tensor([len(w) for w in waves])
                padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
                asr_model.encode(padded.to(device), lengths.to(device))

    configs = [
        Config(
            "speech2text per-sample",
            "speech2text",
            1,
            lambda: [s2t(c) for c in clips],
            lambda: s2t(clips[0]),
        ),
        Config(
            f"session fallback b{FALLBACK_BATCH}",
            "fallback",
            FALLBACK_BATCH,
            fallback,
            lambda: session.forward_batch(clips[:2]),
        ),
    ]
    for size in args.batch_sizes:
        configs.append(
            Config(
                f"batched b{size}",
                "batched",
                size,
                lambda s=size: batched(s),
                lambda s=size: batched(s, part=clips[:s]),
            )
        )
    variant = VARIANT_BATCH  # not `size`: the lambdas below read it when called
    configs.append(
        Config(
            f"batched b{variant} full search",
            "batched",
            variant,
            lambda: batched(variant, full_search),
            lambda: batched(variant, full_search, clips[:variant]),
        )
    )
    if asr_model.ctc is not None:
        greedy = BatchedSpeech2Text(
            model.asr_train_config,
            model.asr_model_file,
            dtype=args.dtype,
            decoding="greedy_ctc",
            max_bucket_size=variant,
            **decoding,
        )
        configs.append(
            Config(
                f"greedy-ctc b{variant}",
                "greedy",
                variant,
                lambda: [o for c in chunks(clips, variant) for o in greedy(c)],
                lambda: greedy(clips[:variant]),
            )
        )
    for size in args.batch_sizes:
        configs.append(
            Config(
                f"encoder-only b{size}",
                "encoder",
                size,
                lambda s=size: encode_only(s),
                lambda s=size: encode_only(s, clips[:s]),
                checked=False,
            )
        )
    runs, outputs = measure_all(configs, audio_s, device, args.repeats)
    reference = outputs["speech2text per-sample"]
    assert reference is not None
    for config, run in zip(configs, runs, strict=True):
        if config.checked and config.kind != "speech2text":
            run.agreement = agreement(outputs[config.name] or [], reference)

    by_name = {r.name: r for r in runs}
    per_sample = by_name["speech2text per-sample"]
    ratios = {
        f"batched_b{s}_throughput_vs_speech2text": by_name[f"batched b{s}"].audio_s_per_s
        / per_sample.audio_s_per_s
        for s in args.batch_sizes
    }
    ratios |= {
        f"batched_b{s}_overhead_above_encoder_floor": by_name[f"batched b{s}"].wall_s
        / by_name[f"encoder-only b{s}"].wall_s
        - 1.0
        for s in args.batch_sizes
    }
    floor = by_name.get(f"encoder-only b{VARIANT_BATCH}")
    for name in (f"batched b{VARIANT_BATCH} full search", f"greedy-ctc b{VARIANT_BATCH}"):
        if floor is not None and name in by_name:
            key = name.replace(" ", "_").replace("-", "_")
            ratios[f"{key}_overhead_above_encoder_floor"] = by_name[name].wall_s / floor.wall_s - 1
    document: dict[str, Any] = {
        "label": args.label,
        "model": model.name,
        "model_facts": model_facts(asr_model),
        "decoding": model.decoding,
        "dtype": args.dtype,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else cpu_name(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "clips": args.clips,
        "utterances": len(clips),
        "audio_s": audio_s,
        "versions": versions(),
        "runs": [asdict(r) for r in runs],
        "ratios": ratios,
    }
    if args.profile:
        path = args.out / f"{args.label}-{model.name}-profile-b16.txt"
        backend.max_bucket_size = 16
        document["profile_b16"] = profile_batched(backend, clips, 16, path)
        document["profile_b16"]["listing"] = path.name
    return document


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or the platform string)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def versions() -> dict[str, str]:
    """Library versions of the run."""
    import espnet

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "espnet": espnet.__version__,
    }


def plot(document: dict, path: Path) -> None:
    """Bar charts of throughput and peak memory per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = document["runs"]
    names = [r["name"] for r in runs]
    colors = {
        "speech2text": "#888888",
        "fallback": "#bbbbbb",
        "batched": "#1f77b4",
        "encoder": "#2ca02c",
        "greedy": "#ff7f0e",
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.45 * len(runs) + 1.8), sharey=True)
    ax1.barh(names, [r["audio_s_per_s"] for r in runs], color=[colors[r["kind"]] for r in runs])
    for y, r in enumerate(runs):
        ax1.text(
            r["audio_s_per_s"],
            y,
            f" {r['audio_s_per_s']:.0f} (RTF {r['rtf']:.4f})",
            va="center",
            fontsize=8,
        )
    ax1.set_xlabel("audio seconds per second (higher is better)")
    ax1.set_xlim(0, 1.3 * max(r["audio_s_per_s"] for r in runs))
    memory = [
        r["cuda_peak_mb"] if r["cuda_peak_mb"] is not None else r["peak_rss_mb"] for r in runs
    ]
    ax2.barh(names, memory, color=[colors[r["kind"]] for r in runs])
    ax2.set_xlabel(
        "peak CUDA allocated (MB)" if runs[0]["cuda_peak_mb"] is not None else "peak RSS (MB)"
    )
    ax1.invert_yaxis()
    facts = document["model_facts"]
    model = (
        f"{facts['parameters_m']:.1f} M params, {facts['encoder_blocks']}x{facts['encoder_dim']} "
        f"{facts['encoder']}, vocab {facts['vocab']}"
    )
    data = f"{document['utterances']} utts, {document['audio_s']:.0f} s audio"
    where = f"{document['device_name']}, {document['threads']} threads"
    fig.suptitle(
        f"{document['label']} / {document['model']}: {model}, {document['decoding']}\n"
        f"{data}, {where}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        choices=["default", "random-large"],
        help="model(s) to benchmark (repeatable; default: both)",
    )
    parser.add_argument("--clips", choices=["heldout", "noise"], default="heldout")
    parser.add_argument("--utterances", type=int, default=128, help="number of clips")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs per configuration (the median is kept)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all cores)"
    )
    parser.add_argument(
        "--label", default=None, help="results name prefix (default: the device kind)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile the batched backend at b16"
    )
    args = parser.parse_args(argv)
    args.model = args.model or ["default", "random-large"]
    args.label = args.label or ("gpu" if args.device.startswith("cuda") else "cpu")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write JSON + PNG results."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    clips = load_clips(args.clips, args.utterances)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model:
            model = default_model(Path(tmp)) if name == "default" else random_large_model(Path(tmp))
            document = bench_model(model, clips, args)
            stem = args.out / f"{args.label}-{model.name}"
            stem.with_suffix(".json").write_text(
                json.dumps(document, indent=2) + "\n", encoding="utf-8"
            )
            plot(document, stem.with_suffix(".png"))
            print(json.dumps(document["ratios"], indent=2), flush=True)


if __name__ == "__main__":
    main()
