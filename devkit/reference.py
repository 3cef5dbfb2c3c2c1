"""espnet2 classes called in-process, as the tests and benchmarks compare the server with them.

- ``Text2Speech`` on a published bundle, the reference for "same samples as in-process": the
  class built directly from the bundle's ``train_config`` and ``model_file`` (and the vocoder
  config its inference config names), with ``always_fix_seed=True``, as a user of espnet2 would
  build it.
- ``Speech2TextStreaming`` fed an utterance in the chunks a realtime session sends it.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np
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


def streamed_transcript(model: Any, audio: np.ndarray, rate: int, append_seconds: float) -> str:
    """``Speech2TextStreaming``'s transcript of ``audio`` appended ``append_seconds`` at a time.

    The chunks are those a realtime session's ``StreamChunker`` cuts from the appends; the
    model is called with each (``is_final=False``), then with the rest (``is_final=True``).

    Args:
        model: An espnet2 ``Speech2TextStreaming`` (e.g. an ``InferenceSession``'s ``model``).
        audio: The utterance at ``rate``, as the server decodes it (16-bit quantised).
        rate: The model's sample rate.
        append_seconds: The client's append length.

    Returns:
        str: The best hypothesis's text.
    """
    from espnet_serve.serving.realtime.turns import StreamChunker

    chunker = StreamChunker(rate)
    step = int(append_seconds * rate)
    for at in range(0, len(audio), step):
        chunk = chunker.add(audio[at : at + step])
        if chunk is not None:
            model(chunk, is_final=False)
    return model(chunker.final(), is_final=True)[0][0]
