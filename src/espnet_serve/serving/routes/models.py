"""OpenAI's ``GET /v1/models`` and ``GET /v1/models/{model}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from espnet_serve.serving.protocol import ModelList, ModelObject
from espnet_serve.serving.routes import ERROR_RESPONSES
from espnet_serve.serving.rpc import ModelInfo
from espnet_serve.serving.served_model import ServedModels

MODELS_ROUTE = "/v1/models"

router = APIRouter()


def served_models(request: Request) -> ServedModels:
    """The app's served models (see :func:`espnet_serve.serving.app.connect`)."""
    return request.app.state.served_models


Models = Annotated[ServedModels, Depends(served_models)]


def model_object(info: ModelInfo) -> ModelObject:
    """The served model's OpenAI model object: its store tag as the id, family, tasks, languages."""
    return ModelObject(
        id=info.tag,
        created=info.created,
        family=info.family,
        tasks=info.tasks,
        languages=info.languages,
        target_languages=info.target_languages,
        voices=info.voices,
        tracks=info.tracks,
    )


@router.get(MODELS_ROUTE, response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(models: Models) -> ModelList:
    """The served models, each with its store tag as the id (OpenAI's list format)."""
    return ModelList(data=[model_object(info) for info in await models.infos()])


@router.get(
    MODELS_ROUTE + "/{model_id:path}", response_model=ModelObject, responses=ERROR_RESPONSES
)
async def retrieve_model(model_id: str, models: Models) -> ModelObject:
    """A served model under any name it answers to; 404 ``model_not_found`` otherwise."""
    return model_object(await (await models.named(model_id)).info())
