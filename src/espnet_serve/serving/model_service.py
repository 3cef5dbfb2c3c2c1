"""The model service: one InferenceSession, fed by BentoML's adaptive batcher.

A speech-to-text model decodes batches of segments (``decode``); a synthesis model
speaks one sentence per call (``synthesize``: espnet2's ``Text2Speech`` takes one
text, see :class:`~espnet_serve.executors.tts.TtsExecutor`); an enhancement model
enhances one recording per call (``enhance``, :class:`~espnet_serve.executors.enh.EnhExecutor`).

Runs on a GPU when the pod has one (``resources={"gpu": N}``), else on CPU.
Each batch of segments goes through the segment pipeline
(:class:`espnet_serve.pipeline.decode.SegmentDecoder`): one bad segment never
fails its batch, every segment gets its own
:class:`~espnet_serve.serving.rpc.SegmentResult`. Requests are shed only by the
API service's admission limit: the batcher's drop deadline is the request
timeout, so it never cancels a request that could still be answered in time.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import time
from typing import Annotated

import bentoml
import torch
from bentoml.exceptions import ServiceUnavailable
from bentoml.validators import ContentType

from espnet_serve.executors import UnsupportedFamilyError, executor_class
from espnet_serve.executors.asr_streaming import AsrStreamingExecutor
from espnet_serve.executors.enh import EnhExecutor
from espnet_serve.executors.tts import SynthesisInputError, SynthesisOptions, TtsExecutor
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.types import DECODE_FAILED, SegmentDecodeError
from espnet_serve.pipeline.warmup import (
    WarmupError,
    warm_up,
    warm_up_enhancement,
    warm_up_synthesis,
)
from espnet_serve.serving.allocator import map_large_blocks
from espnet_serve.serving.drain import SigtermDrain
from espnet_serve.serving.metrics import get_metrics, model_series
from espnet_serve.serving.middleware.inflight import InFlight, InFlightMiddleware
from espnet_serve.serving.rpc import (
    EnhanceRequest,
    EnhanceResult,
    ModelInfo,
    Readiness,
    SegmentFailure,
    SegmentRequest,
    SegmentResult,
    StreamChunk,
    StreamClose,
    StreamText,
    SynthesisRequest,
    SynthesisResult,
)
from espnet_serve.serving.settings import get_settings
from espnet_serve.serving.streams import OpenStreams

logger = logging.getLogger(__name__)
settings = get_settings()

# BentoML's dependency client replaces its HTTP session every 100 calls or 300 s and
# closes the old one with calls still in flight on it (``_bentoml_impl/client/proxy2.py``,
# ``SessionManager.get_session``): those calls fail. Never recycle it.
NEVER_RECYCLE = {"max_requests": 2**62, "max_age": 1e12}
# Held while a model loads: where several load in one process (the models in the API worker),
# espnet2's builders running in parallel threads failed in CPython 3.11's compiler
# ("SystemError: AST constructor recursion depth mismatch").
LOADING = threading.Lock()
# Realtime streams one model worker decodes at once (each holds its own search state).
MAX_OPEN_STREAMS = 256
MODEL_IN_FLIGHT = InFlight()
# Declared, the media type is not worked out again for every response: BentoML otherwise
# builds the output's JSON schema per response to find it (IOMixin.mime_type), measured at
# 6-17 % of the model worker's CPU under load (bench/profile_serve.py).
DecodeResults = Annotated[list[SegmentResult], ContentType("application/json")]


def import_batch_types() -> None:
    """Import, in this thread, every installed module BentoML's batcher looks classes up in.

    To merge a batch, BentoML finds its container by checking each registered class of a
    module already in ``sys.modules`` (pandas' ``DataFrame``, PIL's ``Image``, ...). A module
    the model-loading thread is importing at that moment is there half-initialised, and the
    check raises: every request that reached a restarted worker while it loaded was a 500.
    """
    from bentoml._internal.runner.container import DataContainerRegistry

    for lazy_type in list(DataContainerRegistry.CONTAINER_BATCH_TYPE_MAP):
        module = getattr(lazy_type, "module", "")
        if module and importlib.util.find_spec(module.split(".")[0]) is not None:
            importlib.import_module(module)


def served_model_tags() -> list[str]:
    """The models to serve: the Bento argument ``model_tag``, else the setting.

    Either is one tag or several, comma-separated. ``espnet-serve build --bento`` stores
    the imported model's exact tag as that argument, so a built Bento serves the version
    it was built with.
    """
    tags = getattr(bentoml.use_arguments(), "model_tag", None) or settings.model_tag
    return [tag.strip() for tag in tags.split(",") if tag.strip()]


def service_name(index: int) -> str:
    """The model service of the ``index``-th model: ``ModelService``, ``ModelService2``, ..."""
    return "ModelService" if index == 0 else f"ModelService{index + 1}"


class ModelServiceBase:
    """Decodes batches of audio segments, or speaks sentences, with one bundle's session.

    :func:`model_service` makes one BentoML service of it per served model
    (its ``bento_model``): each has its own worker, batcher and GPU request, so a batch
    never mixes models.
    """

    bento_model: bentoml.models.BentoModel

    def __init__(self, *, install_drain: bool = True, threads: int | None = None) -> None:
        """Start loading the model in the background.

        Args:
            install_drain: Take SIGTERM over for this worker (its own BentoML service); off
                where the model runs inside the API worker, whose drain covers it.
            threads: Torch threads for the model (None: ``model_threads``, else torch's).
        """
        self.threads = threads or settings.model_threads
        self.metrics = get_metrics()
        self.series = model_series(self.bento_model.tag.name)
        self.series.ready.set(0)
        self.decoder: SegmentDecoder | None = None
        self.synthesizer: TtsExecutor | None = None
        self.enhancer: EnhExecutor | None = None
        self.streams: OpenStreams | None = None
        self._loaded = threading.Event()
        self.unready_reason = "the model is loading"
        self.drain = SigtermDrain(
            type(self).__name__,
            MODEL_IN_FLIGHT,
            timeout_seconds=settings.drain_timeout_seconds,
            quiet_seconds=settings.drain_quiet_seconds,
        )
        if install_drain:  # its own process (not inside an API worker)
            self.drain.install()
            # Memory follows the load; inside the API workers it cost 20 % of their throughput.
            map_large_blocks()
        import_batch_types()  # before another thread imports them
        # Load in the background so /readyz answers 503 (not nothing) while it runs.
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def _load(self) -> None:
        """Load the model, one at a time in a process (:data:`LOADING`)."""
        with LOADING:
            self._load_model()

    def _load_model(self) -> None:
        """Load and verify the bundle as its spec says, warm it up, then report ready."""
        from espnet_serve.bundle.store import load_session, stored_model, stored_spec

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        backend_options = {"max_bucket_size": settings.max_batch_size}
        try:
            spec = stored_spec(stored_model(self.bento_model))
            executor = executor_class(spec.family, spec.inference_class)
            session = load_session(
                self.bento_model,
                prefer_model_batch=True,
                batched_backend=settings.batched_backend,
                **(backend_options if settings.batched_backend else {}),
            )
            self.info = ModelInfo(
                name=self.bento_model.tag.name,
                version=str(self.bento_model.tag.version),
                sha256=spec.weights_sha256,
                sample_rate=spec.sample_rate,
                languages=spec.languages,
                target_languages=spec.target_languages,
                created=int(self.bento_model.info.creation_time.timestamp()),
                family=executor.family,
                tasks=list(executor.tasks),
            )
            if issubclass(executor, TtsExecutor):
                self._load_synthesizer(TtsExecutor(session))
            elif issubclass(executor, EnhExecutor):
                self._load_enhancer(EnhExecutor(session))
            else:
                self._load_decoder(SegmentDecoder(session, spec.sample_rate, family=spec.family))
        except UnsupportedFamilyError as exc:
            self.unready_reason = str(exc)
            logger.error("Model %s: %s The service stays unready.", self.bento_model.tag, exc)
            return
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
        self.series.ready.set(1)
        logger.info(
            "Model %s ready: family %s, sha256 %s.",
            self.bento_model.tag,
            self.info.family,
            self.info.sha256[:12],
        )

    def _load_decoder(self, decoder: SegmentDecoder) -> None:
        """Serve a speech-to-text model: complete its info, warm it up."""
        self.decoder = decoder
        executor = decoder.executor
        if isinstance(executor, AsrStreamingExecutor):
            self.streams = OpenStreams(
                executor.open_stream,
                limit=MAX_OPEN_STREAMS,
                idle_seconds=2 * settings.realtime_idle_seconds,
            )
        self.info = self.info.model_copy(
            update={
                "min_samples": executor.min_samples(),
                "languages": self.info.languages or list(executor.languages()),
                "target_languages": self.info.target_languages or list(executor.target_languages()),
                "word_timestamps": decoder.word_timestamps,
                "streaming": self.streams is not None,
            }
        )
        if settings.warmup:
            warm_up(decoder)

    def _load_synthesizer(self, synthesizer: TtsExecutor) -> None:
        """Serve a synthesis model: complete its info, warm it up."""
        self.synthesizer = synthesizer
        self.info = self.info.model_copy(
            update={
                "sample_rate": synthesizer.sample_rate,
                "voices": list(synthesizer.voices),
                "speed_control": synthesizer.speed_control,
            }
        )
        if settings.warmup:
            warm_up_synthesis(synthesizer)

    def _load_enhancer(self, enhancer: EnhExecutor) -> None:
        """Serve an enhancement model: complete its info, warm it up."""
        self.enhancer = enhancer
        self.info = self.info.model_copy(update={"tracks": enhancer.tracks})
        if settings.warmup:
            warm_up_enhancement(enhancer, self.info.sample_rate)

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
    def decode(self, requests: list[SegmentRequest]) -> DecodeResults:
        """Decode a batch of segments; each gets its segment or its own error."""
        self._require_loaded()
        if self.decoder is None:
            failure = SegmentFailure(
                code="task_unsupported", message="This model does not decode speech."
            )
            return [SegmentResult(failure=failure) for _ in requests]
        started = time.time()
        for request in requests:
            self.series.queue_wait_seconds.observe(max(0.0, started - request.sent_at))
        segments = [request.audio_segment() for request in requests]
        outcomes = self.decoder.decode(
            segments,
            words=[request.words for request in requests],
            options=[request.options for request in requests],
        )
        for outcome in outcomes:
            if isinstance(outcome, SegmentDecodeError) and not outcome.invalid_input:
                logger.error("%s", outcome, exc_info=outcome.__cause__ or outcome)
        elapsed = time.time() - started
        audio_seconds = sum(len(s.samples) for s in segments) / self.info.sample_rate
        self.series.decode_seconds.observe(elapsed)
        self.series.batch_size.observe(len(requests))
        self.series.audio_seconds.inc(audio_seconds)
        if audio_seconds > 0:
            self.series.batch_rtf.observe(elapsed / audio_seconds)
        return [SegmentResult.of(outcome) for outcome in outcomes]

    @bentoml.api
    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Speak one sentence (one at a time: see :class:`TtsExecutor`); samples or the error."""
        self._require_loaded()
        if self.synthesizer is None:
            failure = SegmentFailure(code="task_unsupported", message="This model does not speak.")
            return SynthesisResult(failure=failure)
        started = time.time()
        self.series.queue_wait_seconds.observe(max(0.0, started - request.sent_at))
        options = SynthesisOptions(voice=request.voice, speed=request.speed)
        try:
            samples = self.synthesizer.synthesize(request.text, options)
        except SynthesisInputError as exc:
            return SynthesisResult(failure=SegmentFailure(code=exc.code, message=str(exc)))
        except Exception as exc:
            logger.exception("Synthesis failed.")
            message = f"Synthesis failed: {type(exc).__name__}: {exc}"
            return SynthesisResult(failure=SegmentFailure(code=DECODE_FAILED, message=message))
        self.series.decode_seconds.observe(time.time() - started)
        self.series.audio_seconds.inc(len(samples) / self.info.sample_rate)
        return SynthesisResult.of(samples)

    @bentoml.api
    def enhance(self, request: EnhanceRequest) -> EnhanceResult:
        """Enhance or separate one recording (one at a time: see :class:`EnhExecutor`)."""
        self._require_loaded()
        if self.enhancer is None:
            failure = SegmentFailure(
                code="task_unsupported", message="This model does not enhance."
            )
            return EnhanceResult(failure=failure)
        started = time.time()
        self.series.queue_wait_seconds.observe(max(0.0, started - request.sent_at))
        try:
            tracks = self.enhancer.enhance(request.samples, self.info.sample_rate)
        except Exception as exc:
            logger.exception("Enhancement failed.")
            message = f"Enhancement failed: {type(exc).__name__}: {exc}"
            return EnhanceResult(failure=SegmentFailure(code=DECODE_FAILED, message=message))
        self.series.decode_seconds.observe(time.time() - started)
        self.series.audio_seconds.inc(len(request.samples) / self.info.sample_rate)
        return EnhanceResult.of(tracks)

    @bentoml.api
    def stream(self, chunk: StreamChunk) -> StreamText:
        """Decode the next chunk of a realtime stream (a streaming model: :class:`OpenStreams`)."""
        self._require_loaded()
        if self.streams is None:
            failure = SegmentFailure(
                code="task_unsupported", message="This model does not decode streams."
            )
            return StreamText(failure=failure)
        started = time.time()
        text = self.streams.push(chunk)
        self.series.decode_seconds.observe(time.time() - started)
        self.series.audio_seconds.inc(len(chunk.samples) / self.info.sample_rate)
        return text

    @bentoml.api
    def close_stream(self, request: StreamClose) -> Readiness:
        """Forget a stream whose session ended before its utterance did."""
        if self.streams is not None:
            self.streams.close(request.stream_id)
        return Readiness(ready=self._loaded.is_set())


def model_service(tag: str, name: str) -> bentoml.Service:
    """The BentoML model service named ``name`` that serves the stored model ``tag``."""
    inner = type(
        name,
        (ModelServiceBase,),
        {"bento_model": bentoml.models.BentoModel(tag), "__module__": __name__},
    )
    service = bentoml.service(
        name=name,
        resources={"gpu": settings.gpu_count} if settings.gpu_count else {"cpu": "1"},
        traffic={"timeout": settings.request_timeout_seconds},
        runner_connection=NEVER_RECYCLE,
        workers=1,
    )(inner)
    service.add_asgi_middleware(InFlightMiddleware, in_flight=MODEL_IN_FLIGHT)
    return service


MODEL_SERVICES = tuple(
    model_service(tag, service_name(i)) for i, tag in enumerate(served_model_tags())
)
ModelService = MODEL_SERVICES[0]
