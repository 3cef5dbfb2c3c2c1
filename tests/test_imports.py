"""Importing the package and its light modules has no side effects and loads nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("nltk", "omegaconf", "hydra", "torch", "torchaudio", "espnet", "espnet2", "bentoml")


def run_fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout


def loaded_after(statement: str) -> dict[str, bool]:
    report = f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    return json.loads(run_fresh(f"import json, sys; {statement}; {report}").splitlines()[-1])


def test_the_package_ingest_and_http_layer_import_nothing_heavy():
    assert not any(loaded_after("import espnet_serve, espnet_serve.audio.ingest").values())
    loaded = loaded_after("import espnet_serve.serving.app")
    # torch: the API service runs Silero VAD on uploads (espnet_serve.audio.vad); no model code,
    # not even the aligner's torchaudio (word times are the model service's: pipeline.decode).
    model_side = ("nltk", "omegaconf", "hydra", "torchaudio", "espnet", "espnet2")
    assert not any(loaded[m] for m in model_side), loaded


def test_loading_espnet2_through_a_backend_keeps_nltk_offline(tiny_bundle_dir):
    out = run_fresh(
        "from espnet_serve import InferenceSession\n"
        f"InferenceSession.from_pretrained({str(tiny_bundle_dir)!r}, trust_user_code=True)\n"
        "import nltk\n"
        "from espnet_serve.backends.offline import _refuse_download\n"
        "print(nltk.download is _refuse_download)\n"
    )
    assert out.splitlines()[-1] == "True"
