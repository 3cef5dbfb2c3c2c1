"""OpenAI's ``GET /v1/models`` and ``GET /v1/models/{model}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from espnet_serve.serving.protocol import ModelList, ModelObject
from espnet_serve.serving.routes import ERROR_RESPONSES
from espnet_serve.serving.rpc import ModelInfo
from espnet_serve.serving.served_model import ServedModel

MODELS_ROUTE = "/v1/models"

router = APIRouter()


def served_model(request: Request) -> ServedModel:
    """The app's served model (see :func:`espnet_serve.serving.app.connect`)."""
    return request.app.state.served_model


Model = Annotated[ServedModel, Depends(served_model)]


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
    )


@router.get(MODELS_ROUTE, response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(model: Model) -> ModelList:
    """The served model, its store tag as the id (OpenAI's list format)."""
    info = await model.info()
    return ModelList(data=[model_object(info)])


@router.get(
    MODELS_ROUTE + "/{model_id:path}", response_model=ModelObject, responses=ERROR_RESPONSES
)
async def retrieve_model(model_id: str, model: Model) -> ModelObject:
    """The served model under any name it answers to; 404 ``model_not_found`` otherwise."""
    info = await model.named(model_id)
    return model_object(info)
