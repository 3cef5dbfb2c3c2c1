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

VOCODER_CONFIG = "conf/vocoder.yaml"  # the voice bundle's Griffin-Lim settings
# Fields of espnet2's config.yaml that name training-time files or directories.
TRAINING_PATH_FIELDS: dict[str, Any] = {
    "config": None,
    "output_dir": None,
    "train_data_path_and_name_and_type": [],
    "valid_data_path_and_name_and_type": [],
    "train_shape_file": [],
    "valid_shape_file": [],
}


def portable_train_config(config_file: Path, out_file: Path) -> Path:
    """Write a copy of espnet2's ``config.yaml`` that references no other file.

    Args:
        config_file: The training run's ``config.yaml``.
        out_file: Where to write the portable copy.

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
    if config.get("normalize") == "global_mvn" or config.get("bpemodel"):
        raise ValueError(f"{config_file}: needs a stats file or BPE model; not supported.")
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
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    packing = config["packing"]
    train_config = portable_train_config(
        exp_dir / "config.yaml", bundle_dir.parent / "portable_config.yaml"
    )
    write_bundle(
        bundle_dir,
        asr_train_config=train_config,
        asr_model_file=exp_dir / config["training"]["model_file"],
        decoding=dict(packing["decoding"]),
        output_fn=packing["output_fn"],
        user_code_dir=RECIPE_DIR / "src",
    )
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
