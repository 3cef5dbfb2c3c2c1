"""``POST /v1/audio/enhancements``: speech enhancement and separation (ours; OpenAI has none)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from espnet_serve.serving.enhancement import ENHANCEMENTS_ROUTE, EnhancementHandler
from espnet_serve.serving.protocol import EnhancementForm
from espnet_serve.serving.routes import ERROR_RESPONSES

ROUTES = (ENHANCEMENTS_ROUTE,)
AUDIO_RESPONSE = {
    200: {"content": {"audio/wav": {}, "audio/flac": {}}, "description": "A channel per track."}
}

router = APIRouter()


def enhancement_handler(request: Request) -> EnhancementHandler:
    """The app's handler (see :func:`espnet_serve.serving.app.connect`)."""
    return request.app.state.enhancements


@router.post(
    ENHANCEMENTS_ROUTE, response_class=Response, responses={**ERROR_RESPONSES, **AUDIO_RESPONSE}
)
async def create_enhancement(
    file: Annotated[UploadFile, File()],
    form: Annotated[EnhancementForm, Form()],
    handler: Annotated[EnhancementHandler, Depends(enhancement_handler)],
) -> Response:
    """Enhance or separate one recording: a ``wav`` / ``flac`` file, a channel per speaker."""
    return await handler.create_enhancement(file, form)
