"""BentoML entry point: ``bentoml serve service:ApiService``."""

import logging
import os

# The API service reaches the model service over loopback TCP, not a unix socket:
# on SIGTERM, `bentoml serve` deletes the unix socket's file before its workers stop,
# so the API could not reach the model while it drains the requests it accepted.
os.environ.setdefault("BENTOML_NO_UDS", "1")

from espnet_serve.serving.api_service import ApiService
from espnet_serve.serving.model_service import MODEL_SERVICES, ModelService

# BentoML's server logging leaves the root logger at WARNING: keep our INFO lines (one access
# line per request with its id, model ready, SIGTERM drain).
logging.getLogger("espnet_serve").setLevel(logging.INFO)

__all__ = ["MODEL_SERVICES", "ApiService", "ModelService"]
