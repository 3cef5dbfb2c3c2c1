"""The embedded models served together, as ``make serve`` serves them.

The default voice's rendering of digit strings must be understood by the ASR model through the
server, and its samples must equal ``Text2Speech``'s in-process with the torch threads the
server gives each model (on a CPU the models run in the API workers, a thread per worker). A
realtime session takes the streaming model and gets what ``Speech2TextStreaming`` gives
in-process for the same chunks.
The README's examples must run.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import editdistance
import httpx
import numpy as np
import openai
import pytest
import soundfile
import torch

from bench.voice_roundtrip import digit_strings
from devkit.reference import streamed_transcript, text2speech
from espnet_serve import InferenceSession
from espnet_serve.assets import DEFAULT_STREAMING_ARCHIVE, DEFAULT_VOICE_ARCHIVE, load_heldout
from espnet_serve.audio.encode import pcm16
from espnet_serve.bundle.store import DEFAULT_MODEL_NAME, DEFAULT_STREAMING_NAME, DEFAULT_VOICE_NAME
from espnet_serve.executors.tts import seeded_griffin_lim
from espnet_serve.serving.placement import machine_placement
from espnet_serve.serving.settings import ServeSettings
from tests.server import REPO_ROOT, BentoServer, import_default_model, serve_env, start_server

ROUND_TRIP_STRINGS = 30
MAKEFILE_MODELS = ",".join(
    f"{name}:latest" for name in (DEFAULT_MODEL_NAME, DEFAULT_STREAMING_NAME, DEFAULT_VOICE_NAME)
)
RATE = 16000
APPEND = 1600  # a client's 100 ms appends


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    """The embedded models served as ``make serve`` serves them."""
    home = tmp_path_factory.mktemp("home")
    import_default_model(home)  # espnet-serve import-default: every embedded model
    server = start_server(
        "service:ApiService",
        env=serve_env(home, model_tag=MAKEFILE_MODELS, model_in_process="auto"),
        log_path=home / "serve.log",
    )
    yield server
    server.stop()


@contextmanager
def served_threads() -> Iterator[None]:
    """Torch's threads set as the default server sets its models' (``serving/placement.py``)."""
    placement = machine_placement(ServeSettings(), lambda: 0)  # the embedded models are small
    threads = torch.get_num_threads()
    torch.set_num_threads(placement.model_threads or threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def speak(server: BentoServer, text: str, **fields: str) -> httpx.Response:
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav", **fields}
    return httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60)


@pytest.mark.slow
def test_the_asr_model_understands_the_default_voice(both: BentoServer):
    models = httpx.get(f"{both.url}/v1/models").json()["data"]
    assert [m["id"].split(":")[0] for m in models] == [
        DEFAULT_MODEL_NAME,
        DEFAULT_STREAMING_NAME,
        DEFAULT_VOICE_NAME,
    ]
    assert [m["family"] for m in models] == ["asr", "asr_streaming", "tts"]
    assert [m["tasks"] for m in models] == [["transcribe"], ["transcribe"], ["synthesize"]]
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
    # As served: the server's torch threads (float sums follow them), librosa's phases seeded.
    with served_threads(), seeded_griffin_lim(reference.seed):
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


async def streamed(url: str, utterances: list[bytes]) -> list[dict]:
    """Each utterance appended 100 ms at a time at real-time pace, then committed, in a session
    that names no model; every event until the last transcript."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    events: list[dict] = []
    session = {
        "type": "transcription",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": None}},
    }
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session=session)
        for data in utterances:
            for at in range(0, len(data), APPEND * 2):
                chunk = base64.b64encode(data[at : at + APPEND * 2]).decode()
                await conn.input_audio_buffer.append(audio=chunk)
                await asyncio.sleep(APPEND / RATE)  # real-time pace
            await conn.input_audio_buffer.commit()
        async for event in conn:
            events.append(event.model_dump())
            assert event.type != "error", event
            done = [e for e in events if e["type"].endswith("transcription.completed")]
            if len(done) == len(utterances):
                break
    return events


@pytest.mark.slow
def test_a_realtime_session_streams_to_the_streaming_model_as_speech2textstreaming_decodes(
    both: BentoServer, tmp_path: Path
):
    clips = load_heldout(6)
    # Three short utterances, then one of three strings in a row (long enough for the search's
    # blocks to give partial hypotheses before it ends).
    audios = [clip.read_audio(RATE) for clip in clips]
    utterances = [pcm16(audio) for audio in [*audios[:3], np.concatenate(audios[3:])]]
    texts = [clip.text for clip in clips[:3]] + [" ".join(clip.text for clip in clips[3:])]
    events = asyncio.run(streamed(both.url, utterances))
    updated = next(e for e in events if e["type"] == "session.updated")
    assert updated["session"]["audio"]["input"]["transcription"]["model"].startswith(
        DEFAULT_STREAMING_NAME
    )

    # espnet2's class, in-process, fed the chunks the server's StreamChunker cut.
    reference = InferenceSession.from_pretrained(
        str(DEFAULT_STREAMING_ARCHIVE),
        trust_user_code=True,
        downloader_kwargs={"cachedir": str(tmp_path / "cache")},
    ).model
    expected = [
        streamed_transcript(
            reference, np.frombuffer(data, "<i2").astype(np.float32) / 32768, RATE, APPEND / RATE
        )
        for data in utterances
    ]
    completed = [e for e in events if e["type"].endswith("transcription.completed")]
    assert [e["transcript"] for e in completed] == expected
    errors = sum(
        editdistance.eval(e["transcript"].split(), text.split())
        for e, text in zip(completed, texts, strict=True)
    )
    assert errors <= 2, [e["transcript"] for e in completed]
    # The long utterance's first words came as deltas while it was still being appended.
    kinds = [e["type"] for e in events]
    last_commit = len(kinds) - 1 - kinds[::-1].index("input_audio_buffer.committed")
    long_item = completed[-1]["item_id"]
    assert any(
        e["type"].endswith(".delta") and e["item_id"] == long_item for e in events[:last_commit]
    )


@pytest.mark.slow
def test_the_readme_realtime_example_runs_as_written(both: BentoServer):
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("### Realtime transcription over a WebSocket")
    section = readme[start : readme.index("\n### ", start + 1)]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    code = code.replace("http://127.0.0.1:3000", both.url)
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "eight three six"
