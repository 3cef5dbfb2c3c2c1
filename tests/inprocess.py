"""The API app in-process, composed as the BentoML service composes it, and clients for it.

``served_app`` is :func:`build_app` mounted at ``/`` under :func:`edge_middlewares`, the
structure BentoML builds (its Starlette app: the service's middlewares, outermost first,
around its routes and the mounted app). Requests go through ``httpx.ASGITransport``.
"""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import openai
import soundfile as sf
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from espnet_serve.serving.app import build_app, edge_middlewares
from espnet_serve.serving.middleware.inflight import InFlight
from espnet_serve.serving.settings import ServeSettings
from tests.fakes import FakeModelClient


def served_app(
    settings: ServeSettings, fake: FakeModelClient, *, draining: bool = False
) -> ASGIApp:
    """The app the API service serves, over ``fake``."""
    app = build_app(
        settings, model_clients=[fake], in_flight=InFlight(), is_draining=lambda: draining
    )
    middleware = edge_middlewares(settings, is_draining=lambda: draining)
    return Starlette(routes=[Mount("/", app=app)], middleware=middleware)


def wav(seconds: float = 1.0, rate: int = 16000, channels: int = 1) -> bytes:
    """A 440 Hz tone as WAV bytes."""
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone] * channels, axis=1), rate, format="WAV")
    return buffer.getvalue()


class AsyncBridge:
    """``post`` through an ASGI transport from synchronous tests."""

    def __init__(self, app: ASGIApp) -> None:
        self.transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def post(
        self,
        path: str,
        data: bytes,
        content_type: str = "audio/wav",
        headers: dict[str, str] | None = None,
        **form: str | list[str],
    ) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://t") as c:
                files = {"file": ("a", data, content_type)}
                return await c.post(path, files=files, data=form, headers=headers)

        return asyncio.run(send())


def sdk(app: ASGIApp, api_key: str = "unused") -> openai.AsyncOpenAI:
    """The openai SDK, unchanged, talking to ``app``."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t/v1")
    return openai.AsyncOpenAI(base_url="http://t/v1", api_key=api_key, http_client=http)
