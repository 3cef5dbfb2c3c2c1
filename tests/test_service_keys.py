"""API keys, /v1/models, model names and languages on a real ``bentoml serve`` (the openai SDK).

The keys guard BentoML's own routes too (``/metrics`` here, with ``protect_metrics``), while
the probes answer without a key, as the kubelet calls them.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from espnet_serve.assets import load_heldout
from tests.server import BentoServer, serve_default_model

pytestmark = pytest.mark.slow

KEY = "test-key-8c1f"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> BentoServer:
    server = serve_default_model(
        tmp_path_factory.mktemp("bentoml_home"), api_keys=KEY, protect_metrics="true"
    )
    yield server
    server.stop()


def sdk(server: BentoServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_probes_answer_without_a_key_and_metrics_need_one(server: BentoServer):
    assert httpx.get(f"{server.url}/livez").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    refused = httpx.get(f"{server.url}/metrics")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    allowed = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert allowed.status_code == 200 and "espnet_serve_model_info" in allowed.text


def test_the_sdk_with_and_without_the_key(server: BentoServer):
    clip = load_heldout(limit=1)[0]
    (model,) = sdk(server, KEY).models.list().data
    assert model.id.startswith("espnet-digits-asr:")
    assert sdk(server, KEY).models.retrieve("whisper-1").id == model.id
    with clip.path.open("rb") as audio:
        verbose = sdk(server, KEY).audio.transcriptions.create(
            model=model.id, file=audio, response_format="verbose_json"
        )
    assert verbose.text == clip.text and verbose.language == "english"
    with pytest.raises(openai.AuthenticationError):
        sdk(server, "wrong-key").models.list()
    with pytest.raises(openai.NotFoundError):
        sdk(server, KEY).models.retrieve("nonexistent-model")


def test_a_language_the_model_does_not_take_is_400(server: BentoServer):
    clip = load_heldout(limit=1)[0]
    with clip.path.open("rb") as audio, pytest.raises(openai.BadRequestError) as raised:
        sdk(server, KEY).audio.transcriptions.create(
            model="espnet-digits-asr", file=audio, language="de"
        )
    assert raised.value.body["code"] == "unsupported_language"
