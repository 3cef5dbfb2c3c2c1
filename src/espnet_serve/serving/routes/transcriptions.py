"""``POST /transcribe`` and OpenAI's ``POST /v1/audio/transcriptions``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from espnet_serve.serving.handler import TranscriptionHandler
from espnet_serve.serving.protocol import (
    TranscribeResponse,
    TranscriptionForm,
    TranscriptionResponse,
    VerboseTranscriptionResponse,
)
from espnet_serve.serving.routes import ERROR_RESPONSES

TRANSCRIBE_ROUTE = "/transcribe"
TRANSCRIPTIONS_ROUTE = "/v1/audio/transcriptions"
ROUTES = (TRANSCRIBE_ROUTE, TRANSCRIPTIONS_ROUTE)

router = APIRouter()


def transcription_handler(request: Request) -> TranscriptionHandler:
    """The app's handler (see :func:`espnet_serve.serving.app.connect`)."""
    return request.app.state.transcriptions


Handler = Annotated[TranscriptionHandler, Depends(transcription_handler)]


@router.post(TRANSCRIBE_ROUTE, response_model=TranscribeResponse, responses=ERROR_RESPONSES)
async def transcribe(file: Annotated[UploadFile, File()], handler: Handler) -> TranscribeResponse:
    """Transcribe one audio file (WAV, FLAC, OGG, MP3, ...) of any length up to the limit."""
    return await handler.transcribe(file, TRANSCRIBE_ROUTE)


@router.post(
    TRANSCRIPTIONS_ROUTE,
    response_model=TranscriptionResponse | VerboseTranscriptionResponse,
    responses=ERROR_RESPONSES,
)
async def create_transcription(
    file: Annotated[UploadFile, File()],
    form: Annotated[TranscriptionForm, Form()],
    handler: Handler,
) -> Response:
    """OpenAI-compatible transcription (see :class:`TranscriptionForm` for the fields)."""
    return await handler.create_transcription(file, form, TRANSCRIPTIONS_ROUTE)
