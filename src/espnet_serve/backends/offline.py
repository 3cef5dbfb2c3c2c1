"""Keep imports offline: no library may download data while a model loads.

Importing ``espnet2.tasks.asr`` imports ``g2p_en``, which calls
``nltk.download`` for data it does not find. Offline that prints errors, and
in a pod without egress it can hang on DNS. ASR inference never needs that
data, so downloads are refused unless ``ESPNET_SERVE_ALLOW_DOWNLOADS=1``.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

ALLOW_DOWNLOADS_ENV = "ESPNET_SERVE_ALLOW_DOWNLOADS"


def _refuse_download(info_or_id: object = None, *args: object, **kwargs: object) -> bool:
    """Stand-in for ``nltk.download`` that downloads nothing."""
    logger.debug("Refused nltk download of %r; %s=1 allows it.", info_or_id, ALLOW_DOWNLOADS_ENV)
    return False


def block_runtime_downloads() -> None:
    """Make ``nltk.download`` a no-op unless downloads are explicitly allowed."""
    if os.environ.get(ALLOW_DOWNLOADS_ENV) == "1":
        return
    import nltk

    nltk.download = _refuse_download
