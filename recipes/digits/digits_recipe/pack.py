"""Pack the trained model as a published espnet-serve bundle (``meta.yaml``, ``conf/``, ``src/``).

espnet2's ``config.yaml`` already holds the token list inline and uses
per-utterance normalisation (no stats file); the pack step only blanks the
fields that name this machine's training files, so the bundle is
self-contained.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from devkit.publish import pack_bundle, write_bundle
from digits_recipe.config import RECIPE_DIR
from espnet_serve.executors.asr import SPEECH2TEXT

VOCODER_CONFIG = "conf/vocoder.yaml"  # the voice bundle's Griffin-Lim settings
# Where a bundle keeps its global_mvn statistics (the path ESPnet's packer gives them).
STATS_FILE = "exp/asr_stats/train/feats_stats.npz"
SPEECH2TEXT_STREAMING = "espnet2.bin.asr_inference_streaming.Speech2TextStreaming"
# Fields of espnet2's config.yaml that name training-time files or directories.
TRAINING_PATH_FIELDS: dict[str, Any] = {
    "config": None,
    "output_dir": None,
    "train_data_path_and_name_and_type": [],
    "valid_data_path_and_name_and_type": [],
    "train_shape_file": [],
    "valid_shape_file": [],
}


def portable_train_config(config_file: Path, out_file: Path, stats_file: str | None = None) -> Path:
    """Write a copy of espnet2's ``config.yaml`` that references no other file.

    Args:
        config_file: The training run's ``config.yaml``.
        out_file: Where to write the portable copy.
        stats_file: The bundle-relative path of the ``global_mvn`` statistics, if the
            model has them (the bundle ships the file there).

    Returns:
        Path: ``out_file``.

    Raises:
        ValueError: If the config still needs an external file (token list
            file, stats file, BPE model).
    """
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config.update(TRAINING_PATH_FIELDS)
    if not isinstance(config.get("token_list"), list):
        raise ValueError(f"{config_file}: token_list is not inline.")
    if config.get("bpemodel") or (config.get("normalize") == "global_mvn") != bool(stats_file):
        raise ValueError(f"{config_file}: needs a BPE model or its stats file; not supported.")
    if stats_file:
        config["normalize_conf"] = {
            **(config.get("normalize_conf") or {}),
            "stats_file": stats_file,
        }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out_file


def pack(config: Mapping[str, Any], *, exp_dir: Path, bundle_dir: Path, archive: Path) -> Path:
    """Write the bundle directory (replaced if it exists) and pack it into ``archive``.

    Args:
        config: The loaded recipe config (``training.model_file``, ``packing``).
        exp_dir: The espnet2 experiment directory.
        bundle_dir: Bundle directory to write.
        archive: The ``.tar.gz`` archive to write.

    Returns:
        Path: ``archive``.
    """
    return _pack_asr(
        config,
        exp_dir=exp_dir,
        bundle_dir=bundle_dir,
        archive=archive,
        model_file=config["training"]["model_file"],
        decoding=config["packing"]["decoding"],
        portable_config=bundle_dir.parent / "portable_config.yaml",
    )


def pack_streaming(
    config: Mapping[str, Any], *, exp_dir: Path, stats_file: Path, bundle_dir: Path, archive: Path
) -> Path:
    """Write the streaming model's bundle (``Speech2TextStreaming``) and pack it.

    As :func:`pack`, with the ``streaming`` block's decoding options, and the training
    set's feature statistics shipped at :data:`STATS_FILE`.

    Args:
        config: The loaded recipe config (``streaming``, ``packing.output_fn``).
        exp_dir: The espnet2 experiment directory.
        stats_file: The training run's ``feats_stats.npz``.
        bundle_dir: Bundle directory to write (replaced if it exists).
        archive: The ``.tar.gz`` archive to write.

    Returns:
        Path: ``archive``.
    """
    return _pack_asr(
        config,
        exp_dir=exp_dir,
        bundle_dir=bundle_dir,
        archive=archive,
        model_file=config["streaming"]["model_file"],
        decoding=config["streaming"]["decoding"],
        portable_config=bundle_dir.parent / "streaming_portable_config.yaml",
        stats_file=stats_file,
        backend=SPEECH2TEXT_STREAMING,
    )


def _pack_asr(
    config: Mapping[str, Any],
    *,
    exp_dir: Path,
    bundle_dir: Path,
    archive: Path,
    model_file: str,
    decoding: Mapping[str, Any],
    portable_config: Path,
    stats_file: Path | None = None,
    backend: str = SPEECH2TEXT,
) -> Path:
    """One ASR model's bundle: its portable config, weights, decoding and the recipe's output_fn.

    Args:
        config: The loaded recipe config (``packing.output_fn``).
        exp_dir: The espnet2 experiment directory.
        bundle_dir: Bundle directory to write (replaced if it exists).
        archive: The ``.tar.gz`` archive to write.
        model_file: The weights, relative to ``exp_dir``.
        decoding: The bundle's decoding options.
        portable_config: Where the portable training config is written.
        stats_file: Feature statistics shipped at :data:`STATS_FILE` (``global_mvn``), if any.
        backend: The bundle's backend class.

    Returns:
        Path: ``archive``.
    """
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    train_config = portable_train_config(
        exp_dir / "config.yaml",
        portable_config,
        stats_file=None if stats_file is None else STATS_FILE,
    )
    write_bundle(
        bundle_dir,
        asr_train_config=train_config,
        asr_model_file=exp_dir / model_file,
        decoding=dict(decoding),
        output_fn=config["packing"]["output_fn"],
        user_code_dir=RECIPE_DIR / "src",
        backend=backend,
    )
    if stats_file is not None:
        (bundle_dir / STATS_FILE).parent.mkdir(parents=True)
        shutil.copyfile(stats_file, bundle_dir / STATS_FILE)
    return pack_bundle(bundle_dir, archive)


def pack_voice(voice: Mapping[str, Any], *, exp_dir: Path, bundle_dir: Path, archive: Path) -> Path:
    """Write the default voice's bundle (``Text2Speech`` + Griffin-Lim) and pack it.

    The inference config points ``Text2Speech`` at ``conf/vocoder.yaml`` (Griffin-Lim's
    iterations and rate; the STFT and mel settings come from the model's features).

    Args:
        voice: The recipe config's ``voice`` block (``model_file``, ``griffin_lim_iters``).
        exp_dir: The espnet2 experiment directory.
        bundle_dir: Bundle directory to write (replaced if it exists).
        archive: The ``.tar.gz`` archive to write.

    Returns:
        Path: ``archive``.
    """
    from espnet_serve.executors.tts import TEXT2SPEECH

    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    train_config = portable_train_config(
        exp_dir / "config.yaml", bundle_dir.parent / "voice_portable_config.yaml"
    )
    fs = yaml.safe_load(train_config.read_text(encoding="utf-8"))["feats_extract_conf"]["fs"]
    write_bundle(
        bundle_dir,
        asr_train_config=train_config,
        asr_model_file=exp_dir / voice["model_file"],
        decoding={"vocoder_config": f"${{recipe_dir}}/{VOCODER_CONFIG}", "device": "auto"},
        backend=TEXT2SPEECH,
        input_key="text",
        task="tts",
    )
    vocoder = {"fs": int(fs), "griffin_lim_iters": int(voice["griffin_lim_iters"])}
    (bundle_dir / VOCODER_CONFIG).write_text(yaml.safe_dump(vocoder), encoding="utf-8")
    return pack_bundle(bundle_dir, archive)
