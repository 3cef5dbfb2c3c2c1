"""The API's HTTP behaviour in-process: routes, formats, limits and errors, in milliseconds.

The app is the one the BentoML service runs (``build_app``, under the service's edge
middlewares: ``tests.inprocess.served_app``); a fake model client stands in for the model
service (control flow only: the real model and server are tested in ``test_service*.py``).
It answers each segment with its length, so a test sees what reached it.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import httpx
import numpy as np
import openai
import pytest
from pydantic import SecretStr

from espnet_serve.audio import ingest
from espnet_serve.serving.errors import as_api_error
from espnet_serve.serving.middleware.auth import key_digest
from espnet_serve.serving.rpc import Readiness, SegmentFailure
from espnet_serve.serving.settings import ServeSettings
from tests.crafted import CRAFTED_UPLOADS
from tests.fakes import FakeModelClient
from tests.inprocess import AsyncBridge, sdk, served_app, wav


@pytest.fixture()
def fake() -> FakeModelClient:
    return FakeModelClient()


@pytest.fixture()
def settings() -> ServeSettings:
    return ServeSettings(max_audio_bytes=400_000, max_audio_seconds=5, retry_after_seconds=4)


@pytest.fixture()
def client(settings: ServeSettings, fake: FakeModelClient) -> AsyncBridge:
    return AsyncBridge(served_app(settings, fake))


def test_transcribe_resamples_and_mixes_down_before_the_model(client, fake):
    response = client.post("/transcribe", wav(1.0, rate=44100, channels=2))
    assert response.status_code == 200, response.text
    assert response.json() == {"text": "16000 samples", "duration_seconds": 1.0, "model": "fake"}
    (request,) = fake.requests
    assert request.samples.dtype == np.float32 and request.samples.shape == (16000,)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [("json", {"text": "8000 samples"}), ("text", "8000 samples")],
)
def test_openai_formats(client, response_format, expected):
    response = client.post(
        "/v1/audio/transcriptions", wav(0.5), model="fake", response_format=response_format
    )
    assert response.status_code == 200
    assert (response.json() if response_format == "json" else response.text) == expected


def test_openai_verbose_json(client):
    body = client.post(
        "/v1/audio/transcriptions", wav(0.5), model="fake", response_format="verbose_json"
    ).json()
    assert body["task"] == "transcribe" and body["duration"] == 0.5
    assert body["language"] == "english"  # OpenAI's form: the full lowercase name
    assert body["segments"][0]["start"] == 0.0 and body["segments"][0]["end"] == 0.5


@pytest.mark.parametrize(
    "form", [{"model": "fake", "response_format": "xml"}, {"model": "fake", "temperature": "3"}, {}]
)
def test_bad_parameters_are_422_json(client, form):
    response = client.post("/v1/audio/transcriptions", wav(), **form)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_parameters"


def test_limits_and_content_types(client):
    too_big = client.post("/transcribe", b"\0" * 500_000)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "audio_too_large"
    too_long = client.post("/transcribe", wav(6.0, rate=8000))
    assert too_long.status_code == 413 and "limit is 5 s" in too_long.json()["error"]["message"]
    not_audio = client.post("/transcribe", b"hello", content_type="text/plain")
    assert not_audio.status_code == 415
    empty = client.post("/transcribe", b"")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_audio"
    too_short = client.post("/transcribe", wav(0.05))
    assert too_short.status_code == 400
    assert too_short.json()["error"]["message"] == (
        "audio too short: 800 samples (50 ms); the model needs at least 60 ms"
    )


@pytest.mark.parametrize("name", sorted(CRAFTED_UPLOADS))
def test_crafted_uploads_get_their_4xx(client, fake, name):
    data, status, code = CRAFTED_UPLOADS[name]
    response = client.post("/v1/audio/transcriptions", data, model="fake")
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert not fake.requests


def test_a_clip_the_model_refuses_is_400_and_a_model_failure_is_500(client, fake):
    fake.failure = SegmentFailure(code="invalid_audio", message="too short")
    refused = client.post("/transcribe", wav())
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_audio"
    fake.failure = SegmentFailure(code="decode_failed", message="CUDA out of memory")
    failed = client.post("/transcribe", wav())
    error = failed.json()["error"]
    assert failed.status_code == 500 and error["code"] == "decode_failed"
    assert error["type"] == "server_error" and error["error_id"] in error["message"]


def test_model_not_ready_is_503_with_the_reason(client, fake):
    fake.ready = Readiness(ready=False, reason="warm-up failed: broken")
    response = client.post("/transcribe", wav())
    assert response.status_code == 503 and response.headers["retry-after"] == "4"
    assert "warm-up failed: broken" in response.json()["error"]["message"]


def test_a_dropped_connection_to_the_model_is_retried_once(client, fake):
    fake.failures = [aiohttp.ServerDisconnectedError()]
    assert client.post("/transcribe", wav()).status_code == 200
    fake.failures = [aiohttp.ClientOSError(), aiohttp.ClientOSError()]
    response = client.post("/transcribe", wav())
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"


def test_draining_refuses_with_503_before_reading_the_upload(settings, fake):
    response = AsyncBridge(served_app(settings, fake, draining=True)).post("/transcribe", wav())
    assert response.status_code == 503 and response.json()["error"]["code"] == "draining"
    assert response.headers["connection"] == "close" and not fake.requests


@pytest.mark.parametrize("draining", [False, True])
def test_every_answer_closes_its_connection_while_draining(settings, fake, draining):
    async def models() -> httpx.Response:
        transport = httpx.ASGITransport(app=served_app(settings, fake, draining=draining))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/v1/models")

    response = asyncio.run(models())
    assert response.status_code == 200
    assert response.headers.get("connection") == ("close" if draining else None)


def test_the_openai_sdk_talks_to_the_app(settings, fake):
    async def ask() -> str:
        result = await sdk(served_app(settings, fake)).audio.transcriptions.create(
            model="fake", file=("a.wav", wav(0.25))
        )
        return result.text

    assert asyncio.run(ask()) == "4000 samples"


def test_models_list_and_retrieve_through_the_sdk(settings, fake):
    client = sdk(served_app(settings, fake))

    async def ask():
        listed = await client.models.list()
        by_alias = await client.models.retrieve("whisper-1")
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.models.retrieve("nonexistent-model")
        return listed, by_alias, unknown.value

    listed, by_alias, unknown = asyncio.run(ask())
    assert [m.id for m in listed.data] == ["fake:v1"]
    assert listed.data[0].created == 1_700_000_000 and listed.data[0].object == "model"
    assert by_alias.id == "fake:v1"
    assert unknown.body["code"] == "model_not_found"


def test_a_model_that_only_transcribes_refuses_translations_through_the_sdk(settings, fake):
    client = sdk(served_app(settings, fake))

    async def ask():
        listed = await client.models.list()
        with pytest.raises(openai.BadRequestError) as raised:
            await client.audio.translations.create(model="fake", file=("a.wav", wav()))
        return listed, raised.value

    listed, refused = asyncio.run(ask())
    model = listed.data[0].model_dump()
    assert model["tasks"] == ["transcribe"] and model["languages"] == ["en"]
    assert refused.body["code"] == "task_unsupported" and refused.body["param"] == "model"
    assert refused.body["message"] == "This model transcribes only: it cannot translate."
    assert not fake.requests


def test_a_model_that_translates_serves_translations_in_every_format(settings, fake):
    """Control flow with a fake model that translates (the ST executor decodes for real)."""
    fake.tasks = ["translate"]
    client = sdk(served_app(settings, fake))

    async def ask():
        plain = await client.audio.translations.create(model="fake", file=("a.wav", wav(0.5)))
        verbose = await client.audio.translations.create(
            model="fake", file=("a.wav", wav(0.5)), response_format="verbose_json"
        )
        srt = await client.audio.translations.create(
            model="fake", file=("a.wav", wav(0.5)), response_format="srt"
        )
        with pytest.raises(openai.BadRequestError) as raised:
            await client.audio.transcriptions.create(model="fake", file=("a.wav", wav()))
        return plain, verbose, srt, raised.value

    plain, verbose, srt, refused = asyncio.run(ask())
    assert plain.text == "8000 samples"
    assert verbose.language == "english" and verbose.duration == 0.5
    assert [s.text for s in verbose.segments] == ["8000 samples"]
    assert srt.startswith("1\n00:00:00,000 --> ") and "8000 samples" in srt
    assert refused.body["code"] == "task_unsupported"
    assert refused.body["message"] == "This model translates only: it cannot transcribe."


def test_a_translation_target_the_model_does_not_write_is_a_400(settings, fake):
    fake.tasks, fake.target_languages = ["translate"], ["de"]
    client = sdk(served_app(settings, fake))

    async def ask(**extra):
        return await client.audio.translations.create(
            model="fake", file=("a.wav", wav(0.5)), response_format="verbose_json", **extra
        )

    with pytest.raises(openai.BadRequestError) as into_english:
        asyncio.run(ask())
    assert into_english.value.body["code"] == "unsupported_language"
    assert into_english.value.body["param"] == "target_language"
    assert "translates into de only, not 'en'" in into_english.value.body["message"]
    german = asyncio.run(ask(extra_body={"target_language": "DE"}))
    assert german.language == "german" and german.text == "8000 samples"
    with pytest.raises(openai.BadRequestError) as invalid:
        asyncio.run(ask(extra_body={"target_language": "xx"}))
    assert invalid.value.body["code"] == "invalid_language" and not fake.requests[1:]


@pytest.mark.parametrize("name", ["fake", "fake:v1", "whisper-1"])
def test_the_model_is_named_by_tag_name_or_alias(client, name):
    assert client.post("/v1/audio/transcriptions", wav(0.5), model=name).status_code == 200


def test_an_unknown_model_is_a_404_through_the_sdk(settings, fake):
    client = sdk(served_app(settings, fake))

    async def ask():
        await client.audio.transcriptions.create(model="nonexistent-model", file=("a.wav", wav()))

    with pytest.raises(openai.NotFoundError) as raised:
        asyncio.run(ask())
    assert raised.value.body["code"] == "model_not_found" and not fake.requests


@pytest.mark.parametrize(
    ("language", "status", "code"),
    [
        ("en", 200, None),
        ("EN", 200, None),
        ("klingon", 400, "invalid_language"),
        ("xx", 400, "invalid_language"),
        ("de", 400, "unsupported_language"),
    ],
)
def test_language_is_validated(client, fake, language, status, code):
    response = client.post("/v1/audio/transcriptions", wav(0.5), model="fake", language=language)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["error"]["code"] == code and not fake.requests
    if code == "unsupported_language":
        assert "transcribes en only" in response.json()["error"]["message"]


def test_a_multilingual_model_gets_the_language_task_and_prompt_and_reports_what_it_found(
    settings, fake
):
    fake.languages, fake.tasks, fake.target_languages = (
        ["de", "en"],
        ["transcribe", "translate"],
        ["en"],
    )
    client = sdk(served_app(settings, fake))

    async def ask(route: str, **fields):
        create = getattr(client.audio, route).create
        return await create(
            model="fake", file=("a.wav", wav(0.5)), response_format="verbose_json", **fields
        )

    unknown = asyncio.run(ask("transcriptions"))
    german = asyncio.run(ask("transcriptions", language="de", prompt="vorher"))
    fake.identified = "de"
    identified = asyncio.run(ask("transcriptions"))
    translated = asyncio.run(ask("translations", prompt="before"))
    assert [r.language for r in (unknown, german, identified, translated)] == [
        "unknown",  # several languages, none asked for, none identified
        "german",
        "german",
        "english",  # a translation reports the language it is written in
    ]
    sent = [
        (r.options.task, r.options.language, r.options.target_language, r.options.prompt)
        for r in fake.requests
    ]
    assert sent == [
        ("transcribe", None, "en", None),
        ("transcribe", "de", "en", "vorher"),
        ("transcribe", None, "en", None),
        ("translate", None, "en", "before"),
    ]


@pytest.fixture()
def keyed() -> ServeSettings:
    return ServeSettings(api_keys=SecretStr("key-one, key-two"))


def test_api_keys_through_the_sdk(keyed, fake):
    app = served_app(keyed, fake)

    async def ask(key: str) -> str:
        result = await sdk(app, key).audio.transcriptions.create(
            model="fake", file=("a.wav", wav())
        )
        return result.text

    assert asyncio.run(ask("key-two")) == "16000 samples"
    with pytest.raises(openai.AuthenticationError) as wrong:
        asyncio.run(ask("key-three"))
    assert wrong.value.body["code"] == "invalid_api_key"


def test_without_a_key_is_401_json_and_metrics_and_probes_stay_open(keyed, fake):
    transport = httpx.ASGITransport(app=served_app(keyed, fake))

    async def calls():
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return (
                await c.post("/transcribe", files={"file": ("a", wav(), "audio/wav")}),
                await c.get("/v1/models", headers={"Authorization": "Basic key-one"}),
                await c.get("/v1/models", headers={"Authorization": "Bearer key-one"}),
                await c.get("/readyz"),
                await c.get("/metrics"),
            )

    missing, wrong_scheme, ok, readyz, metrics = asyncio.run(calls())
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    assert wrong_scheme.status_code == 401 and ok.status_code == 200
    # Not routes of this app (BentoML serves them): the key check let them through.
    assert readyz.status_code == 404 and metrics.status_code == 404


def test_key_hashes_file(tmp_path, fake):
    hashes = tmp_path / "hashes"
    hashes.write_text(f"# ops team\n{key_digest('from-a-secret')}\n\n")
    app = served_app(ServeSettings(api_key_hashes_file=hashes), fake)

    async def ask(key: str) -> str:
        return (await sdk(app, key).models.list()).data[0].id

    assert asyncio.run(ask("from-a-secret")) == "fake:v1"
    with pytest.raises(openai.AuthenticationError):
        asyncio.run(ask("key-one"))
    hashes.write_text("not-a-hash\n")
    with pytest.raises(ValueError, match="not a hex sha256"):
        served_app(ServeSettings(api_key_hashes_file=hashes), fake)


def test_request_ids_are_kept_or_made_and_in_error_bodies(client):
    kept = client.post("/transcribe", b"hello", "text/plain", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    assert kept.json()["error"]["request_id"] == "abc-123"
    made = client.post("/transcribe", b"hello", "text/plain", headers={"X-Request-ID": "a b\n"})
    assert made.headers["x-request-id"] != "a b\n" and len(made.headers["x-request-id"]) == 32
    assert made.json()["error"]["request_id"] == made.headers["x-request-id"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ingest.UndecodableAudioError, 400),
        (ingest.EmptyAudioError, 400),
        (ingest.AudioTooShortError, 400),
        (ingest.UnsupportedSampleRateError, 400),
        (ingest.TooManyChannelsError, 400),
        (ingest.TruncatedAudioError, 400),
        (ingest.AudioTooLargeError, 413),
        (ingest.UnsupportedMediaTypeError, 415),
    ],
)
def test_each_audio_error_gets_its_status_and_keeps_its_code(error, status):
    answered = as_api_error(error("a plain message"))
    assert (answered.status, answered.code, answered.param) == (status, error.code, "file")
    assert answered.message == "a plain message"


def test_every_error_code_has_one_status():
    """The codes the package raises all have their status in ``serving.errors.STATUS``."""
    from pathlib import Path

    import espnet_serve
    from espnet_serve.pipeline import types
    from espnet_serve.serving.errors import STATUS

    source = "\n".join(p.read_text() for p in Path(espnet_serve.__file__).parent.rglob("*.py"))
    raised = set(re.findall(r'ApiError\(\s*"([a-z_]+)"', source))
    raised |= set(re.findall(r'code=?\s*"([a-z_]+)"', source))
    raised |= {types.INVALID_AUDIO, types.DECODE_FAILED, types.BAD_MODEL_OUTPUT}
    raised |= {error.code for error in _subclasses(ingest.AudioInputError)}
    assert len(raised) > 15 and raised <= set(STATUS), raised - set(STATUS)


def _subclasses(cls: type) -> set[type]:
    return {cls} | {sub for child in cls.__subclasses__() for sub in _subclasses(child)}
