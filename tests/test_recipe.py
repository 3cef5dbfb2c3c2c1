"""The digits recipe runs end to end at toy scale (synthesise, train, pack, load, decode)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from espnet_serve import InferenceSession
from espnet_serve.assets import load_heldout

RECIPE_DIR = Path(__file__).absolute().parent.parent / "recipes" / "digits"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("espeak-ng") is None or shutil.which("sox") is None,
        reason="needs espeak-ng and sox (make sysdeps)",
    ),
]


def test_toy_recipe_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {
        **os.environ,
        "PYTHONPATH": str(RECIPE_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    subprocess.run(
        [
            *(sys.executable, "-m", "digits_recipe.run"),
            *("--config", str(RECIPE_DIR / "conf" / "toy.yaml"), "--work-dir", str(work)),
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=600,
    )
    archive = work / "digits_asr.tar.gz"
    assert archive.is_file()
    assert (work / "bundle" / "src" / "output.py").is_file()

    session = InferenceSession.from_pretrained(
        str(archive), trust_user_code=True, downloader_kwargs={"cachedir": str(tmp_path / "cache")}
    )
    clip = load_heldout(1, directory=work / "data" / "heldout")[0]
    assert sf.info(str(clip.path)).samplerate == 16000
    result = session(clip.read_audio(16000), idx=clip.uttid)
    assert result["uttid"] == clip.uttid
    assert isinstance(result["text"], str)
