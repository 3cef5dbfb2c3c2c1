"""espnet2's ``Text2Speech`` on a published bundle, as the tests and benchmarks compare with it.

The reference for "same samples as in-process": the class built directly from the bundle's
``train_config`` and ``model_file`` (and the vocoder config its inference config names), with
``always_fix_seed=True``, as a user of espnet2 would build it.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import yaml

RECIPE_DIR_VARIABLE = "${recipe_dir}"


def unpacked(source: Path, workdir: Path) -> Path:
    """The bundle directory of ``source``: itself, or an archive unpacked into ``workdir``."""
    if source.is_dir():
        return source
    with tarfile.open(source) as packed:
        packed.extractall(workdir, filter="data")
    return workdir


def text2speech(source: Path, workdir: Path) -> Any:
    """``Text2Speech(train_config, model_file, [vocoder_config], always_fix_seed=True)``."""
    from espnet2.bin.tts_inference import Text2Speech

    root = unpacked(source, workdir)
    meta = yaml.safe_load((root / "meta.yaml").read_text())
    inference_file = root / "conf" / "inference.yaml"
    model = yaml.safe_load(inference_file.read_text())["model"] if inference_file.is_file() else {}
    vocoder = model.get("vocoder_config")
    return Text2Speech(
        str(root / meta["yaml_files"]["train_config"]),
        str(root / meta["files"]["model_file"]),
        vocoder_config=vocoder.replace(RECIPE_DIR_VARIABLE, str(root)) if vocoder else None,
        always_fix_seed=True,
    )
