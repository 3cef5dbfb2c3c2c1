"""The embedded default voice: served beside the digits ASR model, as ``make serve`` does.

Its rendering of digit strings must be understood by the ASR model through the server,
its samples must equal ``Text2Speech``'s in-process, and the README's examples must run.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import editdistance
import httpx
import numpy as np
import pytest
import soundfile

from bench.voice_roundtrip import digit_strings
from devkit.reference import text2speech
from espnet_serve.assets import DEFAULT_VOICE_ARCHIVE
from espnet_serve.audio.encode import pcm16
from espnet_serve.bundle.store import DEFAULT_MODEL_NAME, DEFAULT_VOICE_NAME
from espnet_serve.executors.tts import seeded_griffin_lim
from tests.server import REPO_ROOT, BentoServer, import_default_model, serve_env, start_server

ROUND_TRIP_STRINGS = 30
MAKEFILE_MODELS = f"{DEFAULT_MODEL_NAME}:latest,{DEFAULT_VOICE_NAME}:latest"


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    """The two embedded models served as ``make serve`` serves them."""
    home = tmp_path_factory.mktemp("home")
    import_default_model(home)  # espnet-serve import-default: both models
    server = start_server(
        "service:ApiService",
        env=serve_env(home, model_tag=MAKEFILE_MODELS),
        log_path=home / "serve.log",
    )
    yield server
    server.stop()


def speak(server: BentoServer, text: str, **fields: str) -> httpx.Response:
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav", **fields}
    return httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)


@pytest.mark.slow
def test_the_asr_model_understands_the_default_voice(both: BentoServer):
    models = httpx.get(f"{both.url}/v1/models").json()["data"]
    assert [m["id"].split(":")[0] for m in models] == [DEFAULT_MODEL_NAME, DEFAULT_VOICE_NAME]
    assert [m["tasks"] for m in models] == [["transcribe"], ["synthesize"]]
    texts = digit_strings(ROUND_TRIP_STRINGS)
    errors = 0
    for text in texts:
        wav = speak(both, text)
        assert wav.status_code == 200
        heard = httpx.post(
            f"{both.url}/v1/audio/transcriptions",
            files={"file": ("speech.wav", wav.content, "audio/wav")},
            data={"model": "whisper-1"},
            timeout=60,
        ).json()["text"]
        errors += editdistance.eval(text.split(), heard.split())
    words = sum(len(text.split()) for text in texts)
    assert errors / words <= 0.05, f"{errors} of {words} words misheard"


@pytest.mark.slow
def test_the_default_voice_speaks_as_text2speech_and_refuses_other_words(
    both: BentoServer, tmp_path: Path
):
    served = speak(both, "nine eight seven")
    unknown = speak(both, "hello nine")
    reference = text2speech(DEFAULT_VOICE_ARCHIVE, tmp_path)
    with seeded_griffin_lim(reference.seed):  # as served: librosa's phases seeded too
        expected = reference("nine eight seven")["wav"].numpy().reshape(-1)
    samples, rate = soundfile.read(io.BytesIO(served.content), dtype="int16")
    assert rate == 16000
    assert np.array_equal(samples, np.frombuffer(pcm16(expected), dtype="<i2"))
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_words"
    assert "'hello'" in unknown.json()["error"]["message"]


def readme_speech_examples() -> list[tuple[str, str]]:
    """The (language, code) blocks of the README's speech section."""
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("### Speech synthesis and the default voice")
    section = readme[start : readme.index("\n### ", start + 1)]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_readme_speech_examples_work_as_written(both: BentoServer, tmp_path: Path):
    examples = readme_speech_examples()
    assert [language for language, _ in examples] == ["bash", "python"]
    expected = {"bash": '"text":"seven one"', "python": "four two"}
    for language, code in examples:
        code = code.replace("http://127.0.0.1:3000", both.url)
        command = ["bash", "-ec", code] if language == "bash" else [sys.executable, "-c", code]
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert expected[language] in run.stdout, (code, run.stdout)
