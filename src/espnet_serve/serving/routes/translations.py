"""OpenAI's ``POST /v1/audio/translations``: speech in, its English text out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from espnet_serve.serving.protocol import (
    TranscriptionResponse,
    TranslationForm,
    VerboseTranslationResponse,
)
from espnet_serve.serving.routes import ERROR_RESPONSES
from espnet_serve.serving.routes.transcriptions import Handler

TRANSLATIONS_ROUTE = "/v1/audio/translations"
ROUTES = (TRANSLATIONS_ROUTE,)

router = APIRouter()


@router.post(
    TRANSLATIONS_ROUTE,
    response_model=TranscriptionResponse | VerboseTranslationResponse,
    responses=ERROR_RESPONSES,
)
async def create_translation(
    file: Annotated[UploadFile, File()],
    form: Annotated[TranslationForm, Form()],
    handler: Handler,
) -> Response:
    """OpenAI-compatible translation into English (see :class:`TranslationForm`).

    Served by a model that translates (``tasks`` of ``GET /v1/models``); a model that only
    transcribes answers 400 ``task_unsupported``.
    """
    return await handler.create_translation(file, form, TRANSLATIONS_ROUTE)
