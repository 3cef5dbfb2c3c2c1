"""Train the digits models with espnet2's own tasks (``ASRTask``, ``TTSTask``)."""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from digits_recipe.config import RECIPE_DIR, deep_merge

# espnet2's task classes by the recipe's name for them (imported once downloads are blocked:
# importing them loads g2p_en, which asks nltk to download its data).
TASKS = {"asr": ("espnet2.tasks.asr", "ASRTask"), "tts": ("espnet2.tasks.tts", "TTSTask")}


def write_train_config(config: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Write the effective espnet2 config: the recipe's file plus its ``overrides``.

    Args:
        config: The loaded recipe config.
        path: Where to write the merged espnet2 config.

    Returns:
        dict[str, Any]: The merged espnet2 config, as written.
    """
    training = config["training"]
    base = yaml.safe_load((RECIPE_DIR / training["config"]).read_text(encoding="utf-8"))
    merged = deep_merge(base, training.get("overrides") or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    return merged


def _data_args(split: str, data_dir: Path) -> list[str]:
    """``ASRTask`` arguments naming a data directory's files for ``split`` (train/valid)."""
    return [
        f"--{split}_data_path_and_name_and_type",
        f"{data_dir / 'wav.scp'},speech,sound",
        f"--{split}_data_path_and_name_and_type",
        f"{data_dir / 'text'},text,text",
        f"--{split}_shape_file",
        str(data_dir / "speech_shape"),
        f"--{split}_shape_file",
        str(data_dir / "text_shape"),
    ]


def train(
    config: Mapping[str, Any],
    *,
    train_dir: Path,
    valid_dir: Path,
    token_file: Path,
    exp_dir: Path,
    block: str = "training",
    stats_file: Path | None = None,
) -> Path:
    """Train from scratch into ``exp_dir`` (removed first) and return it.

    espnet2 writes ``config.yaml``, per-epoch checkpoints and, at the end, the
    average of the best epochs by the config's ``best_model_criterion``
    (``valid.cer_ctc.ave.pth``: CTC token error on the validation set).

    Args:
        config: The loaded recipe config (the ``block`` and ``seeds``).
        train_dir: espnet2 data directory of the training set.
        valid_dir: espnet2 data directory of the validation set.
        token_file: Token list, one token per line.
        exp_dir: The experiment directory.
        block: The recipe block of the model: ``training`` (the default model) or
            ``streaming`` (the streaming model); its seed is ``seeds.<block>``.
        stats_file: Feature statistics (:func:`collect_stats`) for ``normalize: global_mvn``.

    Returns:
        Path: ``exp_dir``.
    """
    stats = [] if stats_file is None else ["--normalize_conf", f"stats_file={stats_file}"]
    _run_task(
        "asr",
        config[block],
        exp_dir=exp_dir,
        seed=int(config["seeds"][block]),
        token_file=token_file,
        data_args=[*_data_args("train", train_dir), *_data_args("valid", valid_dir), *stats],
    )
    return exp_dir


def collect_stats(
    config: Mapping[str, Any],
    *,
    train_dir: Path,
    valid_dir: Path,
    token_file: Path,
    stats_dir: Path,
    block: str = "streaming",
) -> Path:
    """espnet2's ``collect_stats`` over the training set: the features' mean and variance.

    As ESPnet's ``asr.sh`` does before training a model with ``normalize: global_mvn``
    (the front end's features, not yet normalised).

    Args:
        config: The loaded recipe config.
        train_dir: espnet2 data directory of the training set.
        valid_dir: espnet2 data directory of the validation set.
        token_file: Token list, one token per line.
        stats_dir: Where espnet2 writes the statistics (removed first).
        block: The recipe block whose espnet2 config gives the front end.

    Returns:
        Path: ``stats_dir/train/feats_stats.npz``.
    """
    _run_task(
        "asr",
        config[block],
        exp_dir=stats_dir,
        seed=int(config["seeds"][block]),
        token_file=token_file,
        data_args=[
            *_data_args("train", train_dir),
            *_data_args("valid", valid_dir),
            *("--collect_stats", "true", "--normalize", "none"),
        ],
    )
    return stats_dir / "train" / "feats_stats.npz"


def _run_task(
    task: str,
    training: Mapping[str, Any],
    *,
    exp_dir: Path,
    seed: int,
    token_file: Path,
    data_args: list[str],
) -> None:
    """Run an espnet2 task's training from scratch into ``exp_dir`` (removed first).

    Args:
        task: ``asr`` or ``tts`` (:data:`TASKS`).
        training: A recipe block with ``config``, ``overrides`` and ``threads``.
        exp_dir: The experiment directory.
        seed: espnet2's ``--seed``.
        token_file: Token list, one token per line.
        data_args: The ``--{train,valid}_*`` arguments naming the data.
    """
    import torch

    from espnet_serve.backends.offline import block_runtime_downloads

    block_runtime_downloads()
    module, name = TASKS[task]
    task_class = getattr(importlib.import_module(module), name)
    if exp_dir.exists():
        shutil.rmtree(exp_dir)
    train_config = exp_dir.parent / f"{exp_dir.name}.train.yaml"
    espnet_config = write_train_config({"training": training}, train_config)
    torch.set_num_threads(int(training["threads"]))
    task_class.main(
        cmd=[
            *("--config", str(train_config), "--output_dir", str(exp_dir)),
            *("--seed", str(seed), "--token_list", str(token_file)),
            *("--token_type", str(espnet_config["token_type"])),
            *data_args,
        ]
    )


def train_voice(
    voice: Mapping[str, Any],
    *,
    train_dir: Path,
    valid_dir: Path,
    token_file: Path,
    exp_dir: Path,
    threads: int,
) -> Path:
    """Train the default voice from scratch into ``exp_dir`` (removed first).

    espnet2's ``TTSTask`` with the voice's config (FastSpeech): text, speech and the exact
    word durations of :mod:`digits_recipe.voice`; the best epoch by validation loss is
    kept (``valid.loss.best.pth``).

    Args:
        voice: The recipe config's ``voice`` block (``config``, ``overrides``, ``seed``).
        train_dir: espnet2 data directory of the training set (with ``durations``).
        valid_dir: ... of the validation set.
        token_file: Token list, one token per line.
        exp_dir: The experiment directory.
        threads: torch threads.

    Returns:
        Path: ``exp_dir``.
    """
    _run_task(
        "tts",
        {**voice, "threads": threads},
        exp_dir=exp_dir,
        seed=int(voice["seed"]),
        token_file=token_file,
        data_args=[*_voice_data_args("train", train_dir), *_voice_data_args("valid", valid_dir)],
    )
    return exp_dir


def _voice_data_args(split: str, data_dir: Path) -> list[str]:
    """``TTSTask`` arguments naming a voice data directory's files for ``split``."""
    return [
        *_data_args(split, data_dir),
        f"--{split}_data_path_and_name_and_type",
        f"{data_dir / 'durations'},durations,text_int",
    ]
