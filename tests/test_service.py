"""The BentoML service end to end: a real ``bentoml serve`` on 127.0.0.1 with the default model.

Started once per module (two API workers, CPU), in a temporary BENTOML_HOME.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from espnet_serve import InferenceSession
from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE, HeldoutClip, load_heldout
from tests.answers import SPECIAL_SYMBOLS, served_text
from tests.crafted import CRAFTED_UPLOADS
from tests.server import REPO_ROOT, BentoServer, service_worker

pytestmark = pytest.mark.slow

SAMPLE_RATE = 16000
MODEL = "espnet-digits-asr"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> InferenceSession:
    """The embedded model through the library, in this process."""
    return InferenceSession.from_pretrained(
        str(DEFAULT_MODEL_ARCHIVE),
        trust_user_code=True,
        downloader_kwargs={"cachedir": tmp_path_factory.mktemp("model_cache")},
    )


@pytest.fixture(scope="module")
def clips(session: InferenceSession) -> list[HeldoutClip]:
    """Held-out clips with distinct transcripts that the model itself gets right.

    The server must give each request exactly what in-process decoding gives
    (a mix-up between requests of a batch would show as a wrong transcript).
    """
    chosen: dict[str, HeldoutClip] = {}
    for clip in load_heldout(limit=60):
        audio = clip.read_audio(SAMPLE_RATE)
        if clip.text not in chosen and session(audio)["text"] == clip.text:
            chosen[clip.text] = clip
    assert len(chosen) >= 32, "the default model should get most held-out clips right"
    return list(chosen.values())[:32]


@pytest.fixture(scope="module")
def server(default_server: BentoServer) -> BentoServer:
    return default_server


def post_file(
    url: str, data: bytes, *, name: str, content_type: str, **form: str
) -> httpx.Response:
    return httpx.post(url, files={"file": (name, data, content_type)}, data=form, timeout=120)


def post_clip(server: BentoServer, clip: HeldoutClip) -> httpx.Response:
    """POST a held-out clip's FLAC file to ``/transcribe``."""
    return post_file(
        f"{server.url}/transcribe",
        clip.path.read_bytes(),
        name=clip.path.name,
        content_type="audio/flac",
    )


def float_wav(audio: np.ndarray) -> bytes:
    """``audio`` as a 32-bit float WAV file (the samples exactly)."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def encoded(clip: HeldoutClip, fmt: str, *, rate: int | None = None, stereo: bool = False) -> bytes:
    rate = rate or SAMPLE_RATE
    audio = clip.read_audio(rate)
    samples = np.stack([audio, audio * 0.8], axis=1) if stereo else audio
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt)
    return buffer.getvalue()


def metric_values(text: str, name: str) -> list[float]:
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", re.M)
    return [float(value) for value in pattern.findall(text)]


def test_readyz_is_503_until_the_model_is_ready(server: BentoServer):
    assert server.readyz_statuses[-1] == 200
    assert 503 in server.readyz_statuses, server.readyz_statuses
    assert httpx.get(f"{server.url}/livez").status_code == 200


def test_transcribe_flac_clips(server: BentoServer, clips: list[HeldoutClip]):
    for clip in clips[:6]:
        response = post_clip(server, clip)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["text"] == clip.text
        assert body["model"] == "espnet-digits-asr"
        assert body["duration_seconds"] == pytest.approx(sf.info(clip.path).duration, abs=0.01)


def test_no_transcript_holds_a_special_symbol(server: BentoServer, session: InferenceSession):
    """Issue 27: the held-out set through the library and the server; and cut to 0.15 s,
    where espnet2's search ends on ``<sos/eos>`` (one encoder frame), the server strips it."""
    heldout = load_heldout()
    cut = SAMPLE_RATE * 15 // 100
    short = [clip.read_audio(SAMPLE_RATE)[:cut] for clip in heldout[:8]]
    library = [session(clip.read_audio(SAMPLE_RATE))["text"] for clip in heldout]
    assert not [text for text in library if SPECIAL_SYMBOLS.search(text)]
    assert {session(audio)["text"] for audio in short} == {"<sos/eos>"}

    def served(data: bytes, name: str, content_type: str) -> str:
        response = post_file(
            f"{server.url}/v1/audio/transcriptions",
            data,
            name=name,
            content_type=content_type,
            model=MODEL,
        )
        assert response.status_code == 200, response.text
        return response.json()["text"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda c: served(c.path.read_bytes(), c.path.name, "audio/flac"), heldout)
        )
        short_answers = list(
            pool.map(lambda a: served(float_wav(a), "short.wav", "audio/wav"), short)
        )
    assert answers == [served_text(text) for text in library]
    assert not [text for text in answers if SPECIAL_SYMBOLS.search(text)]
    assert short_answers == [""] * len(short)


@pytest.mark.parametrize(
    ("fmt", "rate", "stereo", "content_type"),
    [("WAV", 44100, True, "audio/wav"), ("OGG", 16000, False, "audio/ogg")],
)
def test_other_formats_rates_and_channels(server, clips, fmt, rate, stereo, content_type):
    clip = clips[0]
    response = post_file(
        f"{server.url}/transcribe",
        encoded(clip, fmt, rate=rate, stereo=stereo),
        name=f"clip.{fmt.lower()}",
        content_type=content_type,
    )
    assert response.status_code == 200, response.text
    assert response.json()["text"] == clip.text


def test_openai_sdk(server: BentoServer, clips: list[HeldoutClip]):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    clip = clips[1]
    with clip.path.open("rb") as audio:
        result = client.audio.transcriptions.create(model="espnet-digits-asr", file=audio)
    assert result.text == clip.text
    with clip.path.open("rb") as audio:
        text = client.audio.transcriptions.create(
            model="espnet-digits-asr", file=audio, response_format="text"
        )
    assert text.strip() == clip.text
    with clip.path.open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="espnet-digits-asr",
            file=audio,
            response_format="verbose_json",
            language="en",
            prompt="digits",
            temperature=0.0,
        )
    assert verbose.text == clip.text
    assert verbose.duration == pytest.approx(sf.info(clip.path).duration, abs=0.01)
    assert verbose.segments[0].text == clip.text
    with clip.path.open("rb") as audio, pytest.raises(openai.BadRequestError) as refused:
        client.audio.translations.create(model="espnet-digits-asr", file=audio)
    assert refused.value.body["code"] == "task_unsupported"
    assert "transcribes only" in refused.value.body["message"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_transcript(server, clips):
    def transcribe(clip: HeldoutClip) -> str:
        response = post_clip(server, clip)
        assert response.status_code == 200, response.text
        return response.json()["text"]

    with ThreadPoolExecutor(max_workers=len(clips)) as pool:
        texts = list(pool.map(transcribe, clips))
    assert texts == [clip.text for clip in clips]
    metrics = httpx.get(f"{server.url}/metrics").text
    batch_sum = sum(metric_values(metrics, "bentoml_service_adaptive_batch_size_sum"))
    batch_count = sum(metric_values(metrics, "bentoml_service_adaptive_batch_size_count"))
    assert batch_count > 0 and batch_sum > batch_count, "some batch must hold more than one clip"
    ours = metric_values(metrics, "espnet_serve_batch_size_sum")[0]
    assert ours > metric_values(metrics, "espnet_serve_batch_size_count")[0]


def test_corrupt_file_fails_alone(server: BentoServer, clips: list[HeldoutClip]):
    good = clips[:8]
    corrupt = clips[8].path.read_bytes()[:300] + b"\x00garbage" * 50

    def send(payload: tuple[bytes, str]) -> httpx.Response:
        data, name = payload
        return post_file(f"{server.url}/transcribe", data, name=name, content_type="audio/flac")

    payloads = [(clip.path.read_bytes(), clip.path.name) for clip in good]
    payloads.insert(4, (corrupt, "corrupt.flac"))
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        responses = list(pool.map(send, payloads))
    bad = responses.pop(4)
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["code"] == "truncated_audio"  # a cut-off FLAC stream
    assert [r.status_code for r in responses] == [200] * len(good)
    assert [r.json()["text"] for r in responses] == [clip.text for clip in good]


def test_bad_uploads_and_parameters_leave_the_server_serving(
    server: BentoServer, clips: list[HeldoutClip]
):
    """Refusals through real uvicorn and multipart parsing (the limits themselves, 413 on size
    and length: ``test_http_app.py``); the server keeps serving."""
    url = f"{server.url}/transcribe"
    wrong_type = post_file(url, b"hello", name="a.txt", content_type="text/plain")
    assert wrong_type.status_code == 415
    assert wrong_type.json()["error"]["code"] == "unsupported_media_type"

    empty = post_file(url, b"", name="empty.wav", content_type="audio/wav")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_audio"

    openai_url = f"{server.url}/v1/audio/transcriptions"
    audio = clips[0].path.read_bytes()
    for form in (
        {"model": MODEL, "response_format": "xml"},
        {"model": MODEL, "temperature": "3"},
        {},
    ):
        bad = post_file(openai_url, audio, name="a.flac", content_type="audio/flac", **form)
        assert bad.status_code == 422, (form, bad.text)
        assert bad.json()["error"]["code"] == "invalid_parameters"

    ok = post_file(url, audio, name="a.flac", content_type="audio/flac")
    assert ok.status_code == 200 and ok.json()["text"] == clips[0].text


def test_metrics_expose_our_series(server: BentoServer, clips: list[HeldoutClip]):
    post_file(f"{server.url}/transcribe", b"not audio", name="x.wav", content_type="audio/wav")
    post_file(
        f"{server.url}/transcribe",
        clips[0].path.read_bytes(),
        name="a.flac",
        content_type="audio/flac",
    )
    metrics = httpx.get(f"{server.url}/metrics").text
    for series in (
        "espnet_serve_audio_seconds_total",
        "espnet_serve_decode_seconds_count",
        "espnet_serve_batch_real_time_factor_count",
        "espnet_serve_queue_wait_seconds_count",
        "espnet_serve_pending_requests",
    ):
        assert metric_values(metrics, series), series
    assert metric_values(metrics, "espnet_serve_audio_seconds_total")[0] > 0
    assert re.search(r'espnet_serve_errors_total\{code="invalid_audio"\} [1-9]', metrics)
    assert re.search(
        r'espnet_serve_transcriptions_total\{outcome="ok",route="/transcribe"\}', metrics
    )
    info = re.search(r"espnet_serve_model_info\{([^}]*)\} 1\.0", metrics)
    assert info and 'name="espnet-digits-asr"' in info.group(1)
    assert re.search(r'sha256="[0-9a-f]{64}"', info.group(1))


def readme_service_examples() -> list[tuple[str, str]]:
    """The (language, code) blocks of the README's HTTP service section."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## The HTTP service") : readme.index("### Settings")]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


def test_readme_examples_work_as_written(server: BentoServer):
    """Run from the repository root, on the shipped held-out clip the README names."""
    (clip,) = [clip for clip in load_heldout(limit=2) if clip.uttid == "heldout_00001"]
    examples = readme_service_examples()
    assert [language for language, _ in examples] == ["bash", "python", "python"]
    for language, code in examples:
        code = code.replace("http://127.0.0.1:3000", server.url)
        command = ["bash", "-ec", code] if language == "bash" else [sys.executable, "-c", code]
        run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert clip.text in run.stdout, (code, run.stdout)


def test_crafted_headers_are_refused_cheaply_and_the_server_keeps_serving(
    server: BentoServer, clips: list[HeldoutClip]
):
    url = f"{server.url}/v1/audio/transcriptions"
    workers = [service_worker(server, "ApiService")]
    before = sum(worker.memory_info().rss for worker in workers)
    for name, (data, status, code) in CRAFTED_UPLOADS.items():
        response = post_file(url, data, name="crafted.wav", content_type="audio/wav", model=MODEL)
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error", (name, error)
        assert error["code"] == code, (name, error)
        assert "Argument #" not in error["message"] and "Traceback" not in error["message"]
    grown = sum(worker.memory_info().rss for worker in workers) - before
    assert grown < 50 * 2**20, f"API worker RSS grew {grown / 2**20:.0f} MiB"
    ok = post_clip(server, clips[0])
    assert ok.status_code == 200 and ok.json()["text"] == clips[0].text
