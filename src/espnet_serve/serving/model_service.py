"""The model service: one InferenceSession, fed by BentoML's adaptive batcher.

Runs on a GPU when the pod has one (``resources={"gpu": N}``), else on CPU.
One bad clip never fails its batch: every clip gets its own ``ClipResult``,
which says whether the clip was bad (the client's fault) or decoding it failed
(ours). Requests are shed only by the API service's admission limit: the
batcher's drop deadline is the request timeout, so it never cancels a request
that could still be answered in time.
"""

from __future__ import annotations

import logging
import threading
import time

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable

from espnet_serve.backends.sample_errors import InvalidSampleError
from espnet_serve.bundle import DEFAULT_SAMPLE_RATE
from espnet_serve.longform.align import CtcAligner
from espnet_serve.serving.drain import InFlight, SigtermDrain
from espnet_serve.serving.inflight import InFlightMiddleware
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.schemas import (
    ClipRequest,
    ClipResult,
    ModelInfo,
    Readiness,
    TimedWordModel,
)
from espnet_serve.serving.settings import get_settings
from espnet_serve.serving.warmup import WarmupError, warm_up
from espnet_serve.transcripts import transcript_text

logger = logging.getLogger(__name__)
settings = get_settings()

# BentoML's dependency client replaces its HTTP session every 100 calls or 300 s and
# closes the old one with calls still in flight on it (``_bentoml_impl/client/proxy2.py``,
# ``SessionManager.get_session``): those calls fail. Never recycle it.
NEVER_RECYCLE = {"max_requests": 2**62, "max_age": 1e12}
MODEL_IN_FLIGHT = InFlight()
WEIGHTS_ARTIFACT = "asr_model_file"


def served_model_tag() -> str:
    """The model to serve: the Bento argument ``model_tag``, else the setting.

    ``espnet-serve build --bento`` stores the imported model's exact tag as that
    argument, so a built Bento serves the version it was built with.
    """
    return getattr(bentoml.use_arguments(), "model_tag", None) or settings.model_tag


@bentoml.service(
    name="AsrModel",
    resources={"gpu": settings.gpu_count} if settings.gpu_count else {"cpu": "1"},
    traffic={"timeout": settings.request_timeout_seconds},
    runner_connection=NEVER_RECYCLE,
    workers=1,
)
class AsrModel:
    """Decodes batches of clips with the bundle's ``InferenceSession``."""

    bento_model = bentoml.models.BentoModel(served_model_tag())

    def __init__(self) -> None:
        self.metrics = get_metrics()
        self._loaded = threading.Event()
        self.unready_reason = "the model is loading"
        self.drain = SigtermDrain(
            "AsrModel",
            MODEL_IN_FLIGHT,
            timeout_seconds=settings.drain_timeout_seconds,
            quiet_seconds=settings.drain_quiet_seconds,
        )
        self.drain.install()
        # Load in the background so /readyz answers 503 (not nothing) while it runs.
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def _load(self) -> None:
        """Load and verify the bundle, warm it up, then report ready."""
        from espnet_serve.store import load_session

        backend_options = {"max_batch_size": settings.max_batch_size}
        try:
            self.session = load_session(
                self.bento_model,
                prefer_model_batch=True,
                batched_backend=settings.batched_backend,
                **(backend_options if settings.batched_backend else {}),
            )
            metadata = self.bento_model.info.metadata
            sample_rate = int(metadata.get("sample_rate", DEFAULT_SAMPLE_RATE))
            self.aligner = self._aligner(sample_rate)
            self.info = ModelInfo(
                name=self.bento_model.tag.name,
                version=str(self.bento_model.tag.version),
                sha256=self._weights_sha256(metadata),
                sample_rate=sample_rate,
                min_samples=int(getattr(self.session.model, "min_samples", 0)),
                languages=list(metadata.get("languages", [])),
                created=int(self.bento_model.info.creation_time.timestamp()),
                word_timestamps=self.aligner is not None,
            )
            if settings.warmup:
                warm_up(self.session, sample_rate)
        except WarmupError as exc:
            self.unready_reason = f"warm-up failed: {exc}"
            logger.error("Model %s: %s; the service stays unready.", self.bento_model.tag, exc)
            return
        except Exception as exc:
            self.unready_reason = f"loading failed: {type(exc).__name__}: {exc}"
            logger.exception(
                "Loading model %s failed; the service stays unready.", self.bento_model.tag
            )
            return
        self.metrics.model_info.labels(self.info.name, self.info.version, self.info.sha256).set(1)
        self._loaded.set()
        logger.info("Model %s ready (sha256 %s).", self.bento_model.tag, self.info.sha256[:12])

    def _aligner(self, sample_rate: int) -> CtcAligner | None:
        """The CTC aligner for word timestamps, or ``None`` if the model has no CTC head."""
        try:
            return CtcAligner(self.session.model, sample_rate)
        except (AttributeError, ValueError) as exc:
            logger.info("Model %s gives no word timestamps: %s", self.bento_model.tag, exc)
            return None

    def _weights_sha256(self, metadata: dict) -> str:
        """The weights' digest recorded at import (load verified every file against it)."""
        relpath = self.session.bundle_metadata.get("files", {}).get(WEIGHTS_ARTIFACT)
        return str(metadata["files"].get(relpath, "")) if relpath else ""

    def __is_ready__(self) -> bool:
        """Ready once the model is loaded, verified and warmed up, until SIGTERM."""
        return self._loaded.is_set() and not self.drain.draining

    def _require_loaded(self) -> None:
        if not self._loaded.is_set():
            raise ServiceUnavailable(f"The model is not ready: {self.unready_reason}.")

    @bentoml.api
    def model_info(self) -> ModelInfo:
        """Name, version, weights sha256, sample rate and shortest input of the served model."""
        self._require_loaded()
        return self.info

    @bentoml.api
    def readiness(self) -> Readiness:
        """Whether the model is ready and, if not, why."""
        if self._loaded.is_set():
            return Readiness(ready=True)
        return Readiness(ready=False, reason=self.unready_reason)

    @bentoml.api(
        batchable=True,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=int(settings.request_timeout_seconds * 1000),
    )
    def transcribe(self, clips: list[ClipRequest]) -> list[ClipResult]:
        """Transcribe a batch; each clip gets a transcript or its own error."""
        self._require_loaded()
        started = time.time()
        for clip in clips:
            self.metrics.queue_wait_seconds.observe(max(0.0, started - clip.sent_at))
        waves = [np.asarray(clip.audio, dtype=np.float32) for clip in clips]
        outputs = self.session.forward_batch(waves, return_exceptions=True)
        results = [self._result(output) for output in outputs]
        self._align(clips, waves, results)
        elapsed = time.time() - started
        audio_seconds = sum(len(wave) for wave in waves) / self.info.sample_rate
        self.metrics.decode_seconds.observe(elapsed)
        self.metrics.batch_size.observe(len(clips))
        self.metrics.audio_seconds.inc(audio_seconds)
        if audio_seconds > 0:
            self.metrics.batch_rtf.observe(elapsed / audio_seconds)
        return results

    def _align(
        self, clips: list[ClipRequest], waves: list[np.ndarray], results: list[ClipResult]
    ) -> None:
        """Add word times to the results of the clips that asked, in one aligner batch."""
        wanted = [i for i, clip in enumerate(clips) if clip.align and results[i].text is not None]
        if not wanted or self.aligner is None:
            return
        try:
            alignments = self.aligner.align(
                [waves[i] for i in wanted], [str(results[i].text) for i in wanted]
            )
        except Exception:  # the transcripts stand; the words stay untimed
            logger.exception("Aligning %d clips failed; their words are not timed.", len(wanted))
            return
        for index, alignment in zip(wanted, alignments, strict=True):
            if alignment is None:
                continue
            result = results[index]
            result.words = [
                TimedWordModel(word=w.word, start=w.start, end=w.end) for w in alignment.words
            ]
            result.token_ids = list(alignment.token_ids)
            result.avg_logprob = alignment.avg_logprob

    def _result(self, output: object) -> ClipResult:
        """Turn one session output (or its exception) into a ``ClipResult``."""
        if isinstance(output, InvalidSampleError):
            return ClipResult(error_kind="invalid_audio", error=str(output), client_error=True)
        if isinstance(output, BaseException):
            logger.error("Decoding a clip failed.", exc_info=output)
            return ClipResult(
                error_kind="decode_failed", error=str(output) or type(output).__name__
            )
        try:
            return ClipResult(text=transcript_text(output))
        except TypeError as exc:
            logger.error("The model's output has no transcript: %s", exc)
            return ClipResult(error_kind="bad_model_output", error=str(exc))


AsrModel.add_asgi_middleware(InFlightMiddleware, in_flight=MODEL_IN_FLIGHT)
