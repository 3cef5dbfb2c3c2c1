"""The family matrix at full size: each recipe's model served as its espnet2 class decodes it.

For every family, a model is built at the real size of an ESPnet egs2 recipe (the recipe's
architecture options; random weights, their output projections scaled so that posteriors are
peaked as a trained model's are and floating-point noise cannot flip an answer), packed as a
published bundle (``meta.yaml`` + ``conf/inference.yaml``) and then:

1. decoded by the espnet2 class called directly, one call per clip (the reference, and the
   baseline time);
2. loaded as the server loads it (``batched_backend=True``: the batched class where the family
   has an exact one, else the family's own class) and decoded through the segment pipeline, all
   clips in one call: text and token ids compared with (1), time compared with (1);
3. with ``--served``: imported with ``espnet-serve build``, served with ``bentoml serve`` and
   transcribed with the openai SDK, the texts compared with (1).

An OWSM row (families ``s2t``, ``s2t_ctc``) is compared three times: transcribing with a
given language (``<eng>``), with no language (the attention model's language identification,
compared with espnet2's ``Speech2Language``; OWSM-CTC's default ``<nolang>``) and translating
into English (``<st_eng>``; over HTTP on ``/v1/audio/translations``).

The vocabulary is synthetic (5,000 word tokens, LibriSpeech's BPE size; OWSM: 50,000 tokens,
its special tokens around word tokens). Writes
``<out>/families.json`` and ``<out>/families.md`` (the table of ``docs/model-families.md``).

Example:
    python bench/families.py --clips 16 --served
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openai
import torch

from devkit.publish import write_bundle
from devkit.random_init import (
    AsrExperiment,
    owsm_token_list,
    sharpen,
    write_random_asr_experiment,
    write_random_lm_experiment,
    write_random_s2t_experiment,
    write_random_st_experiment,
    write_random_transducer_experiment,
)
from devkit.recipes import (
    AISHELL_BRANCHFORMER_E24,
    AISHELL_STREAMING_CONFORMER,
    FISHER_CALLHOME_SPANISH_CONFORMER_ST,
    LIBRISPEECH_100_CONFORMER,
    LIBRISPEECH_100_CONFORMER_INTERCTC,
    LIBRISPEECH_100_CONFORMER_RNN_TRANSDUCER,
    LIBRISPEECH_100_CONFORMER_TRANSDUCER,
    LIBRISPEECH_100_E_BRANCHFORMER,
    LIBRISPEECH_100_TRANSFORMER_LM,
    MUST_C_V2_CONFORMER_ST,
    OWSM_CTC_V31_MEDIUM,
    OWSM_V31_BASE,
    Recipe,
)
from espnet_serve import InferenceSession
from espnet_serve.assets import load_heldout
from espnet_serve.audio.segmenter import AudioSegment
from espnet_serve.backends.offline import training_only_stand_ins
from espnet_serve.bundle.imports import import_object
from espnet_serve.executors import DecodeOptions
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.types import Segment
from tests.answers import served_text
from tests.server import serve_env, start_server

SAMPLE_RATE = 16000
VOCABULARY = ("<blank>", "<unk>", *(f"w{i}" for i in range(4997)), "<sos/eos>")
SHARPEN = 8.0  # scale of the output projections (CTC, attention decoder)
# Not a transducer's joint network: peaked at random, it makes espnet2's default transducer
# search expand many symbols per frame (over 15 min for 16 clips at full size).
SHARPENED = ("ctc.ctc_lo.weight", "decoder.output_layer.weight")
# A trained transducer's joint network gives blank most frames; at random it gives every token
# about the same, and espnet2's default search then expands many symbols per frame (4 clips at
# full size did not finish in 8 min). Raising the blank logit by this much: 2-9 s per clip.
BLANK_BIAS = 6.0
JOINT_OUTPUT_BIAS = "joint_network.lin_out.bias"
SPEECH2TEXT = "espnet2.bin.asr_inference.Speech2Text"
OWSM_VOCABULARY_SIZE = 50000  # OWSM v3.1's BPE vocabulary, special tokens included
# How each OWSM comparison asks (DecodeOptions) and what espnet2's class is given for it.
OWSM_MODES: dict[str, tuple[DecodeOptions, dict[str, str]]] = {
    "language": (DecodeOptions(language="en"), {"lang_sym": "<eng>", "task_sym": "<asr>"}),
    "identified": (DecodeOptions(), {}),
    "translated": (DecodeOptions(task="translate"), {"task_sym": "<st_eng>"}),
}


@dataclass(frozen=True)
class Family:
    """One row: a recipe's model and how its bundle decodes."""

    name: str
    recipe: str
    build: Callable[[Path], AsrExperiment]
    decoding: dict[str, Any]
    target: str = SPEECH2TEXT
    lm: bool = False
    blank_bias: float = 0.0  # added to the joint network's blank logit (a transducer)
    task: str = "asr"  # espnet2's task: the bundle's exp/<task>/ files; st is served as translate
    identifies: bool = False  # an OWSM model with a language-identification step


def _asr(recipe: Recipe) -> Callable[[Path], AsrExperiment]:
    def build(out: Path) -> AsrExperiment:
        return write_random_asr_experiment(
            out, token_list=VOCABULARY, token_type="word", n_mels=80, **recipe.options
        )

    return build


def _st(recipe: Recipe) -> Callable[[Path], AsrExperiment]:
    def build(out: Path) -> AsrExperiment:
        return write_random_st_experiment(
            out,
            token_list=VOCABULARY,
            src_token_list=VOCABULARY,
            token_type="word",
            n_mels=80,
            **recipe.options,
        )

    return build


def _s2t(recipe: Recipe) -> Callable[[Path], AsrExperiment]:
    def build(out: Path) -> AsrExperiment:
        specials = len(owsm_token_list([]))
        words = [f"w{i}" for i in range(OWSM_VOCABULARY_SIZE - specials)]
        return write_random_s2t_experiment(
            out, token_list=owsm_token_list(words), token_type="word", **recipe.options
        )

    return build


def _asr_transducer(out: Path) -> AsrExperiment:
    return write_random_transducer_experiment(
        out,
        token_list=VOCABULARY,
        token_type="word",
        n_mels=80,
        **LIBRISPEECH_100_CONFORMER_RNN_TRANSDUCER.options,
    )


FAMILIES = (
    Family(
        "conformer hybrid + transformer LM",
        f"{LIBRISPEECH_100_CONFORMER.config}, train_lm.yaml, decode_asr.yaml",
        _asr(LIBRISPEECH_100_CONFORMER),
        {"beam_size": 20, "ctc_weight": 0.3, "lm_weight": 0.3},
        lm=True,
    ),
    Family(
        "e-branchformer hybrid",
        f"{LIBRISPEECH_100_E_BRANCHFORMER.config}, decode_asr.yaml without its LM (beam 20, "
        "ctc 0.3)",
        _asr(LIBRISPEECH_100_E_BRANCHFORMER),
        {"beam_size": 20, "ctc_weight": 0.3},
    ),
    Family(
        "branchformer hybrid",
        f"{AISHELL_BRANCHFORMER_E24.config}, beam 10, ctc 0.3",
        _asr(AISHELL_BRANCHFORMER_E24),
        {"beam_size": 10, "ctc_weight": 0.3},
    ),
    Family(
        "conformer CTC + interCTC",
        f"{LIBRISPEECH_100_CONFORMER_INTERCTC.config}, decode_ctc_bs1 (beam 1, CTC)",
        _asr(LIBRISPEECH_100_CONFORMER_INTERCTC),
        {"beam_size": 1, "ctc_weight": 1.0},
    ),
    Family(
        "conformer, decoder: transducer",
        f"{LIBRISPEECH_100_CONFORMER_TRANSDUCER.config}, tuning/decode_transducer.yaml",
        _asr(LIBRISPEECH_100_CONFORMER_TRANSDUCER),
        {"beam_size": 10, "transducer_conf": {"search_type": "default", "score_norm": True}},
        blank_bias=BLANK_BIAS,
    ),
    Family(
        "espnet2.asr_transducer conformer-RNN",
        f"{LIBRISPEECH_100_CONFORMER_RNN_TRANSDUCER.config}, "
        "tuning/transducer/decode.yaml (+ score_norm)",
        _asr_transducer,
        {"beam_size": 5, "beam_search_config": {"search_type": "default", "score_norm": True}},
        target="espnet2.bin.asr_transducer_inference.Speech2Text",
    ),
    Family(
        "contextual-block streaming conformer (whole utterances)",
        f"{AISHELL_STREAMING_CONFORMER.config}, decode_asr_streaming2.yaml (no LM)",
        _asr(AISHELL_STREAMING_CONFORMER),
        {"beam_size": 20, "ctc_weight": 0.6, "penalty": 0.0},
        target="espnet2.bin.asr_inference_streaming.Speech2TextStreaming",
    ),
    Family(
        "conformer speech translation (Spanish to English)",
        f"{FISHER_CALLHOME_SPANISH_CONFORMER_ST.config}, st_inference's defaults (beam 20)",
        _st(FISHER_CALLHOME_SPANISH_CONFORMER_ST),
        {"beam_size": 20},
        target="espnet2.bin.st_inference.Speech2Text",
        task="st",
    ),
    Family(
        "conformer speech translation, current relative positions (English to German)",
        f"{MUST_C_V2_CONFORMER_ST.config}, tuning/decode_st_conformer.yaml (beam 10)",
        _st(MUST_C_V2_CONFORMER_ST),
        {"beam_size": 10, "maxlenratio": 1.2, "minlenratio": 0.5},
        target="espnet2.bin.st_inference.Speech2Text",
        task="st",
    ),
    # maxlenratio: a random decoder seldom writes <eos>; 0.04 of OWSM's 750 frames is 30 tokens.
    Family(
        "OWSM v3.1 base (attention)",
        f"{OWSM_V31_BASE.config} at base size (see devkit/recipes.py), beam 5, "
        "ctc 0, maxlenratio 0.04",
        _s2t(OWSM_V31_BASE),
        {"beam_size": 5, "ctc_weight": 0.0, "maxlenratio": 0.04},
        target="espnet2.bin.s2t_inference.Speech2Text",
        task="s2t",
        identifies=True,
    ),
    Family(
        "OWSM-CTC v3.1",
        f"{OWSM_CTC_V31_MEDIUM.config}, decode_s2t.yaml (beam 1)",
        _s2t(OWSM_CTC_V31_MEDIUM),
        {"beam_size": 1},
        target="espnet2.bin.s2t_inference_ctc.Speech2Text",
        task="s2t",
    ),
)


@dataclass
class Row:
    """One family's results."""

    family: str
    recipe: str
    inference_class: str
    loads: bool = False
    served_family: str = ""
    equal_in_process: bool = False
    clips: int = 0
    batched: bool = False
    word_times: bool = False  # the decoder times words, and it timed every transcript
    espnet2_seconds: float = 0.0
    served_path_seconds: float = 0.0
    speedup: float = 0.0
    # Per comparison (OWSM: language, identified, translated); "identified" counts espnet2's
    # Speech2Language pass in its espnet2 time, as a client asking for no language waits for it.
    speedups: dict[str, float] = field(default_factory=dict)
    served_over_http: bool | None = None
    error: str = ""
    mismatches: list[str] = field(default_factory=list)


def _peak(model_file: Path, blank_bias: float) -> None:
    """Make the random model's posteriors peaked (and a transducer's blank-dominated)."""
    sharpen(model_file, SHARPENED, SHARPEN)
    if blank_bias:
        state = torch.load(model_file, map_location="cpu")
        state[JOINT_OUTPUT_BIAS][0] += blank_bias
        torch.save(state, model_file)


def _bundle(family: Family, root: Path) -> Path:
    experiment = family.build(root / "exp")
    _peak(experiment.asr_model_file, family.blank_bias)
    lm = {}
    if family.lm:
        written = write_random_lm_experiment(
            root / "lm",
            token_list=VOCABULARY,
            token_type="word",
            **LIBRISPEECH_100_TRANSFORMER_LM.options,
        )
        lm = {"lm_train_config": written.lm_train_config, "lm_file": written.lm_file}
    return write_bundle(
        root / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        backend=family.target,
        decoding={**family.decoding, "device": "cpu"},
        task=family.task,
        **lm,
    )


def _reference(bundle: Path, family: Family) -> Any:
    options = {**family.decoding, "device": "cpu"}
    if family.lm:
        options |= {
            "lm_train_config": bundle / "exp/lm/config.yaml",
            "lm_file": bundle / "exp/lm/model.pth",
        }
    with training_only_stand_ins():
        return import_object(family.target)(
            **{
                f"{family.task}_train_config": bundle / f"exp/{family.task}/config.yaml",
                f"{family.task}_model_file": bundle / f"exp/{family.task}/model.pth",
            },
            **options,
        )


def _best(reference: Any, output: Any) -> tuple[str, tuple[int, ...]]:
    if isinstance(output, tuple):
        output = output[0]
    if hasattr(reference, "hypotheses_to_results"):
        output = reference.hypotheses_to_results(output)
    text, _, token_ids, *_ = output[0]  # OWSM adds text without special tokens, then hyp
    return served_text(text or ""), tuple(int(t) for t in token_ids)


# What the openai SDK sends for each comparison: the route and its arguments.
SDK_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "": ("transcriptions", {}),
    "st": ("translations", {}),
    "language": ("transcriptions", {"language": "en"}),
    "identified": ("transcriptions", {}),
    "translated": ("translations", {}),
}


def _served(bundle: Path, clips: list, home: Path, modes: list[str]) -> dict[str, list[str]]:
    """The openai SDK's answers from a real ``bentoml serve``, for each comparison."""
    env = serve_env(home, model_tag="family:latest")
    cli = str(Path(sys.executable).with_name("espnet-serve"))
    subprocess.run(
        [cli, "build", str(bundle), "--name", "family"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    server = start_server("service:ApiService", env=env, log_path=home / "serve.log", timeout=900)
    try:
        sdk = openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=600
        )
        texts: dict[str, list[str]] = {}
        for mode in modes:
            route, arguments = SDK_CALLS[mode]
            create = getattr(sdk.audio, route).create
            texts[mode] = []
            for clip in clips:
                with clip.path.open("rb") as audio:
                    texts[mode].append(create(model="family", file=audio, **arguments).text)
        return texts
    finally:
        server.stop()


def _modes(family: Family) -> dict[str, tuple[DecodeOptions | None, dict[str, str]]]:
    """The comparisons of a row: OWSM's three, else one (the task its family serves)."""
    if family.task == "s2t":
        return OWSM_MODES
    return {family.task if family.task == "st" else "": (None, {})}


def _identified(
    bundle: Path, family: Family, waves: list[np.ndarray]
) -> tuple[list[str | None], float]:
    """The language token espnet2's ``Speech2Language`` gives each clip (OWSM attention).

    Returns:
        The tokens, and the seconds identification took (after one warm-up clip).
    """
    if not family.identifies:
        return [None] * len(waves), 0.0
    from espnet2.bin.s2t_inference_language import Speech2Language

    identifier = Speech2Language(
        bundle / "exp/s2t/config.yaml", bundle / "exp/s2t/model.pth", device="cpu"
    )
    identifier(waves[0])
    started = time.perf_counter()
    tokens = [identifier(wave)[0][0] for wave in waves]
    return tokens, time.perf_counter() - started


def run_family(family: Family, clips: list, waves: list[np.ndarray], served: bool) -> Row:
    row = Row(family.name, family.recipe, family.target, clips=len(waves))
    with tempfile.TemporaryDirectory(prefix="family-") as scratch:
        bundle = _bundle(family, Path(scratch))
        reference = _reference(bundle, family)
        modes = _modes(family)
        identified, identifying = _identified(bundle, family, waves)
        reference(waves[0])  # warm
        expected: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
        espnet2_seconds: dict[str, float] = {}
        for mode, (_, symbols) in modes.items():
            started = time.perf_counter()
            expected[mode] = [
                _best(reference, reference(wave, **_symbols(symbols, language)))
                for wave, language in zip(waves, identified, strict=True)
            ]
            espnet2_seconds[mode] = time.perf_counter() - started
            if mode == "identified":
                espnet2_seconds[mode] += identifying
        row.espnet2_seconds = round(next(iter(espnet2_seconds.values())), 3)
        try:
            session = InferenceSession.from_pretrained(
                str(bundle),
                batched_backend=True,
                prefer_model_batch=True,
                max_bucket_size=len(waves),
            )
            decoder = SegmentDecoder(session, SAMPLE_RATE)
        except Exception as exc:  # a row that does not load is a result
            row.error = f"{type(exc).__name__}: {exc}"
            return row
        row.loads, row.served_family = True, decoder.executor.family
        row.batched, row.word_times = session.prefer_model_batch, decoder.word_timestamps
        segments = [AudioSegment.whole(i, wave, SAMPLE_RATE) for i, wave in enumerate(waves)]
        decoder.decode(segments[:1])  # warm
        for number, (mode, (options, _)) in enumerate(modes.items()):
            asked = None if options is None else [options] * len(segments)
            started = time.perf_counter()
            outcomes = decoder.decode(segments, options=asked)
            seconds = time.perf_counter() - started
            row.speedups[mode or family.task] = round(espnet2_seconds[mode] / seconds, 2)
            if number == 0:
                row.served_path_seconds = round(seconds, 3)
            ours = [
                (o.text, o.tokens) if isinstance(o, Segment) else ("<error>", ()) for o in outcomes
            ]
            row.mismatches += [
                f"{mode} {i}: {o} != {e}"
                for i, (o, e) in enumerate(zip(ours, expected[mode], strict=True))
                if o != e
            ]
        row.speedup = round(row.espnet2_seconds / row.served_path_seconds, 2)
        row.equal_in_process = not row.mismatches
        if row.word_times:  # every transcript timed, in the first mode (a transcription)
            first = next(iter(modes.values()))[0]
            timed = decoder.decode(
                segments, words=True, options=None if first is None else [first] * len(segments)
            )
            row.word_times = all(o.words for o in timed if isinstance(o, Segment) and o.text)
        if served:
            texts = _served(bundle, clips[:8], Path(scratch) / "home", list(modes))
            row.served_over_http = all(
                texts[mode] == [text for text, _ in expected[mode][:8]] for mode in modes
            )
    return row


def _symbols(symbols: dict[str, str], identified: str | None) -> dict[str, str]:
    """espnet2's keyword inputs for one clip: the mode's, the identified language by default."""
    return {"lang_sym": identified, **symbols} if identified is not None else dict(symbols)


def table(rows: list[Row]) -> str:
    lines = [
        "| family | egs2 recipe config | served as | loads | served == espnet2 | "
        "batched and exact? | speed-up, one call for all clips vs one per clip | word times |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        equal = "yes" if row.equal_in_process else f"**no** ({len(row.mismatches)} clips)"
        if row.served_over_http is not None:
            equal += ", and over HTTP" if row.served_over_http else ", **not over HTTP**"
        batched = (
            ("yes, " + ("exact" if row.equal_in_process else "**not exact**"))
            if row.batched
            else "no: one clip at a time"
        )
        lines.append(
            f"| {row.family} | `{row.recipe}` | `{row.served_family or '-'}` | "
            f"{'yes' if row.loads else 'no: ' + row.error} | {equal} | {batched} | "
            f"{_speedups(row)} ({row.clips} clips) | {'yes' if row.word_times else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _speedups(row: Row) -> str:
    """The first comparison's speed-up; each comparison's for a row with several."""
    if len(row.speedups) < 2:
        return f"{row.speedup:.2f}x"
    return ", ".join(f"{mode} {speedup:.2f}x" for mode, speedup in row.speedups.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=16, help="held-out clips per family")
    parser.add_argument("--only", action="append", help="family names containing this text")
    parser.add_argument("--served", action="store_true", help="also serve each model over HTTP")
    parser.add_argument("--out", type=Path, default=Path("bench/results/families"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    clips = load_heldout(args.clips)
    waves = [clip.read_audio(SAMPLE_RATE) for clip in clips]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for family in FAMILIES:
        if args.only and not any(part in family.name for part in args.only):
            continue
        print(f"== {family.name}", flush=True)
        rows.append(run_family(family, clips, waves, args.served))
        print(json.dumps(asdict(rows[-1])), flush=True)
        result = {
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
            },
            "audio_seconds": round(sum(len(w) for w in waves) / SAMPLE_RATE, 2),
            "rows": [asdict(row) for row in rows],
        }
        (args.out / "families.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        (args.out / "families.md").write_text(table(rows), encoding="utf-8")


if __name__ == "__main__":
    main()
