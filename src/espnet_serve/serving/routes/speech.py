"""OpenAI's ``POST /v1/audio/speech``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from espnet_serve.serving.protocol import SpeechRequest
from espnet_serve.serving.routes import ERROR_RESPONSES
from espnet_serve.serving.speech import SPEECH_ROUTE, SpeechHandler

ROUTES = (SPEECH_ROUTE,)
AUDIO_RESPONSE = {200: {"content": {"audio/mpeg": {}, "audio/wav": {}}, "description": "Audio."}}

router = APIRouter()


def speech_handler(request: Request) -> SpeechHandler:
    """The app's handler (see :func:`espnet_serve.serving.app.connect`)."""
    return request.app.state.speech


@router.post(SPEECH_ROUTE, response_class=Response, responses={**ERROR_RESPONSES, **AUDIO_RESPONSE})
async def create_speech(
    request: SpeechRequest, handler: Annotated[SpeechHandler, Depends(speech_handler)]
) -> Response:
    """OpenAI-compatible speech synthesis (see :class:`SpeechRequest` for the fields)."""
    return await handler.create_speech(request)
