"""BentoML entry point: ``bentoml serve service:Transcriber``."""

from espnet_serve.serving.api_service import Transcriber
from espnet_serve.serving.model_service import AsrModel

__all__ = ["AsrModel", "Transcriber"]
