"""The model service: one InferenceSession, fed by BentoML's adaptive batcher.

Runs on a GPU when the pod has one (``resources={"gpu": N}``), else on CPU.
One bad clip never fails its batch: every clip gets its own ``ClipResult``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable

from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.schemas import ClipRequest, ClipResult, ModelInfo
from espnet_serve.serving.settings import get_settings
from espnet_serve.serving.transcripts import transcript_text

logger = logging.getLogger(__name__)
settings = get_settings()

DEFAULT_SAMPLE_RATE = 16000
WARMUP_SECONDS = 1.0


def served_model_tag() -> str:
    """The model to serve: the Bento argument ``model_tag``, else the setting.

    ``espnet-serve build --bento`` stores the imported model's exact tag as that
    argument, so a built Bento serves the version it was built with.
    """
    return getattr(bentoml.use_arguments(), "model_tag", None) or settings.model_tag


def _file_sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


@bentoml.service(
    name="AsrModel",
    resources={"gpu": settings.gpu_count} if settings.gpu_count else {"cpu": "1"},
    traffic={"timeout": settings.request_timeout_seconds},
    workers=1,
)
class AsrModel:
    """Decodes batches of clips with the bundle's ``InferenceSession``."""

    bento_model = bentoml.models.BentoModel(served_model_tag())

    def __init__(self) -> None:
        self.metrics = get_metrics()
        self._loaded = threading.Event()
        # Load in the background so /readyz answers 503 (not nothing) while it runs.
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def _load(self) -> None:
        """Load and verify the bundle, warm it up, then report ready."""
        from espnet_serve.store import load_session

        try:
            self.session = load_session(
                self.bento_model,
                prefer_model_batch=True,
                batched_backend=settings.batched_backend,
            )
            metadata = self.bento_model.info.metadata
            weights = self.session.artifacts.get("asr_model_file")
            self.info = ModelInfo(
                name=self.bento_model.tag.name,
                version=str(self.bento_model.tag.version),
                sha256=_file_sha256(Path(weights)) if weights else "",
                sample_rate=int(metadata.get("sample_rate", DEFAULT_SAMPLE_RATE)),
            )
            if settings.warmup:
                silence = np.zeros(int(self.info.sample_rate * WARMUP_SECONDS), np.float32)
                self.session.forward_batch([silence, silence], return_exceptions=True)
        except Exception:
            logger.exception(
                "Loading model %s failed; the service stays unready.", self.bento_model.tag
            )
            return
        self.metrics.model_info.labels(self.info.name, self.info.version, self.info.sha256).set(1)
        self._loaded.set()
        logger.info("Model %s ready (sha256 %s).", self.bento_model.tag, self.info.sha256[:12])

    def __is_ready__(self) -> bool:
        """Ready once the model is loaded, verified and warmed up."""
        return self._loaded.is_set()

    def _require_loaded(self) -> None:
        if not self._loaded.is_set():
            raise ServiceUnavailable("The model is still loading.")

    @bentoml.api
    def model_info(self) -> ModelInfo:
        """Name, version, weights sha256 and sample rate of the served model."""
        self._require_loaded()
        return self.info

    @bentoml.api(
        batchable=True,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
    )
    def transcribe(self, clips: list[ClipRequest]) -> list[ClipResult]:
        """Transcribe a batch; each clip gets a transcript or its own error."""
        self._require_loaded()
        started = time.time()
        for clip in clips:
            self.metrics.queue_wait_seconds.observe(max(0.0, started - clip.sent_at))
        outputs = self.session.forward_batch([clip.audio for clip in clips], return_exceptions=True)
        results = [self._result(output) for output in outputs]
        elapsed = time.time() - started
        audio_seconds = sum(len(clip.audio) for clip in clips) / self.info.sample_rate
        self.metrics.decode_seconds.observe(elapsed)
        self.metrics.batch_size.observe(len(clips))
        self.metrics.audio_seconds.inc(audio_seconds)
        if audio_seconds > 0:
            self.metrics.batch_rtf.observe(elapsed / audio_seconds)
        return results

    def _result(self, output: object) -> ClipResult:
        """Turn one session output (or its exception) into a ``ClipResult``."""
        if isinstance(output, BaseException):
            self.metrics.errors.labels("decode_failed").inc()
            return ClipResult(
                error_kind="decode_failed", error=str(output) or type(output).__name__
            )
        try:
            return ClipResult(text=transcript_text(output))
        except TypeError as exc:
            self.metrics.errors.labels("bad_model_output").inc()
            return ClipResult(error_kind="bad_model_output", error=str(exc))
