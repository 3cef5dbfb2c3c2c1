"""Write a published model bundle and pack it as an espnet_model_zoo archive.

Bundle layout (what ``InferenceSession.from_pretrained`` and the build step read)::

    meta.yaml                  schema_version, files, yaml_files, user_code_paths, versions
    conf/inference.yaml        model (_target_), input_key, output_fn, recipe_dir: "."
    exp/asr/config.yaml        espnet2 training config (exp/<task>/: st, ...)
    exp/asr/model.pth          weights
    src/                       recipe code (output_fn), run only under trust
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from espnet_serve.bundle.layout import META_FILENAME
from espnet_serve.executors.asr import SPEECH2TEXT

SCHEMA_VERSION = 1
TRAIN_CONFIG_RELPATH = "exp/asr/config.yaml"
MODEL_FILE_RELPATH = "exp/asr/model.pth"
INFERENCE_CONFIG_RELPATH = "conf/inference.yaml"
LM_CONFIG_RELPATH = "exp/lm/config.yaml"
LM_FILE_RELPATH = "exp/lm/model.pth"
UNPREFIXED_TASKS = ("tts",)  # espnet2's packer names their files train_config, model_file


def _versions() -> dict[str, str]:
    """Library versions recorded in ``meta.yaml`` (as espnet2's packer does)."""
    import espnet
    import torch

    return {"espnet": espnet.__version__, "torch": str(torch.__version__), "python": sys.version}


def write_bundle(
    out_dir: Path,
    *,
    asr_train_config: Path,
    asr_model_file: Path,
    decoding: Mapping[str, Any] | None = None,
    backend: str = SPEECH2TEXT,
    input_key: str = "speech",
    output_fn: str | None = None,
    user_code_dir: Path | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    lm_train_config: Path | None = None,
    lm_file: Path | None = None,
    task: str = "asr",
) -> Path:
    """Lay out a published bundle directory (an ASR model's, or another ``task``'s).

    Args:
        out_dir: Bundle directory to create (must not exist or be empty).
        asr_train_config: espnet2 ``config.yaml`` of the trained model. It must
            not point at other files (inline ``token_list``, no stats file).
        asr_model_file: The model weights (``*.pth``).
        decoding: Extra ``model`` options for the inference config
            (``beam_size``, ``ctc_weight``, ``device``, ...).
        backend: The ``_target_`` of the inference config's ``model``.
        input_key: The backend's input keyword.
        output_fn: Dotted path of the recipe output function (e.g. ``src.output.output_fn``).
        user_code_dir: Directory copied to ``src/`` (recipe code).
        extra_meta: Extra ``meta.yaml`` fields.
        lm_train_config: A language model's espnet2 ``config.yaml`` (shallow fusion; set
            ``lm_weight`` in ``decoding``).
        lm_file: The language model's weights.
        task: The model's espnet2 task (``asr``, ``st``, ``tts``): its files are the artifacts
            ``<task>_train_config`` and ``<task>_model_file`` under ``exp/<task>/`` (for
            ``tts``, ``train_config`` and ``model_file``, as espnet2's packer names them).

    Returns:
        Path: ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(f"Bundle directory {out_dir} is not empty.")
    prefix = "" if task in UNPREFIXED_TASKS else f"{task}_"
    artifacts = {
        f"{prefix}train_config": (asr_train_config, TRAIN_CONFIG_RELPATH.replace("asr", task)),
        f"{prefix}model_file": (asr_model_file, MODEL_FILE_RELPATH.replace("asr", task)),
    }
    if lm_train_config is not None and lm_file is not None:
        artifacts["lm_train_config"] = (lm_train_config, LM_CONFIG_RELPATH)
        artifacts["lm_file"] = (lm_file, LM_FILE_RELPATH)
    for source, relpath in artifacts.values():
        target = out_dir / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    inference: dict[str, Any] = {
        "recipe_dir": ".",
        "input_key": input_key,
        "model": {
            "_target_": backend,
            **{key: f"${{recipe_dir}}/{relpath}" for key, (_, relpath) in artifacts.items()},
            **dict(decoding or {}),
        },
    }
    if output_fn is not None:
        inference["output_fn"] = output_fn
    config_path = out_dir / INFERENCE_CONFIG_RELPATH
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(inference, sort_keys=False), encoding="utf-8")

    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "files": {k: relpath for k, (_, relpath) in artifacts.items() if not k.endswith("config")},
        "yaml_files": {
            **{k: relpath for k, (_, relpath) in artifacts.items() if k.endswith("config")},
            "inference_config": INFERENCE_CONFIG_RELPATH,
        },
        **_versions(),
    }
    if user_code_dir is not None:
        shutil.copytree(
            user_code_dir, out_dir / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        meta["user_code_paths"] = ["src"]
    meta.update(extra_meta or {})
    (out_dir / META_FILENAME).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    return out_dir


def pack_bundle(bundle_dir: Path, archive_path: Path) -> Path:
    """Pack a bundle directory into a ``.tar.gz`` / ``.tgz`` / ``.zip`` archive.

    Uses espnet2's own ``Archiver`` (the writer behind ``espnet2 pack``), with
    ``meta.yaml`` first and every member named relative to the bundle root, so
    ``espnet_model_zoo``'s ``ModelDownloader`` unpacks it.

    Args:
        bundle_dir: A directory written by :func:`write_bundle`.
        archive_path: The archive to write; its suffix picks the format.

    Returns:
        Path: ``archive_path``.
    """
    from espnet2.main_funcs.pack_funcs import Archiver

    if not (bundle_dir / META_FILENAME).is_file():
        raise FileNotFoundError(f"No {META_FILENAME} in {bundle_dir}.")
    members = sorted(
        p
        for p in bundle_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.name != META_FILENAME
    )
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    # Archiver prints a line per member; keep library output quiet.
    with contextlib.redirect_stdout(io.StringIO()), Archiver(archive_path, mode="w") as archive:
        for path in [bundle_dir / META_FILENAME, *members]:
            archive.add(str(path), arcname=path.relative_to(bundle_dir).as_posix())
    return archive_path


def pack_published(recipe_dir: Path, build: Callable[[Path], Any], archive_path: Path) -> Path:
    """Build an experiment in ``recipe_dir`` and pack it as ``espnet2 pack`` packs TTS models.

    Like enhancement models: ``train_config`` and ``model_file``, paths relative to the recipe.

    Args:
        recipe_dir: The recipe directory (created); the experiment goes to ``exp/train/``.
        build: Writes the experiment into the directory it is given and returns it (an
            ``AsrExperiment``: ``asr_train_config``, ``asr_model_file``).
        archive_path: The archive to write.

    Returns:
        Path: ``archive_path``.
    """
    from espnet2.main_funcs.pack_funcs import pack

    recipe_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(recipe_dir), contextlib.redirect_stdout(io.StringIO()):
        experiment = build(Path("exp/train"))
        pack(
            files={"model_file": str(experiment.asr_model_file)},
            yaml_files={"train_config": str(experiment.asr_train_config)},
            option=[],
            outpath=str(archive_path.absolute()),
        )
    return archive_path
