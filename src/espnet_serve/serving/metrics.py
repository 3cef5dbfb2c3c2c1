"""Prometheus series of espnet-serve, exported beside BentoML's own on ``/metrics``.

BentoML runs several worker processes and exports metrics in Prometheus
multiprocess mode; a worker sets ``PROMETHEUS_MULTIPROC_DIR`` only after the
service module is imported, so ``prometheus_client`` is imported and the
series are created on first use (inside a service's ``__init__``), never at
import time.

The model services' series carry the label ``model``: the served model's store name
(``espnet-digits-asr``), so that several models in one server are told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

NAMESPACE = "espnet_serve"
# Labels of every series a model service exports.
MODEL_LABELS = ("model",)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RTF_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class ServiceMetrics:
    """The series; each attribute is a ``prometheus_client`` metric."""

    audio_seconds: Any
    requests: Any
    errors: Any
    decode_seconds: Any
    batch_rtf: Any
    batch_size: Any
    queue_wait_seconds: Any
    pending_requests: Any
    upload_bytes_held: Any
    model_info: Any
    model_ready: Any
    segments_resent: Any


@lru_cache(maxsize=1)
def get_metrics() -> ServiceMetrics:
    """Create the series once per process (after the worker set up multiprocess mode)."""
    from prometheus_client import Counter, Gauge, Histogram

    return ServiceMetrics(
        audio_seconds=Counter(
            "audio_seconds",
            "Seconds of audio a model took in (transcribed, enhanced) or gave out (spoken).",
            MODEL_LABELS,
            namespace=NAMESPACE,
        ),
        requests=Counter(
            "transcriptions",
            "Transcription requests by route and outcome.",
            ["route", "outcome"],
            namespace=NAMESPACE,
        ),
        errors=Counter(
            "errors", "Failed requests and refusals by error code.", ["code"], namespace=NAMESPACE
        ),
        decode_seconds=Histogram(
            "decode_seconds",
            "Wall time of one model call (a batch of segments, a sentence, a recording).",
            MODEL_LABELS,
            namespace=NAMESPACE,
            buckets=_LATENCY_BUCKETS,
        ),
        batch_rtf=Histogram(
            "batch_real_time_factor",
            "Decode time divided by the batch's audio duration.",
            MODEL_LABELS,
            namespace=NAMESPACE,
            buckets=_RTF_BUCKETS,
        ),
        batch_size=Histogram(
            "batch_size",
            "Samples per model call.",
            MODEL_LABELS,
            namespace=NAMESPACE,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        ),
        queue_wait_seconds=Histogram(
            "queue_wait_seconds",
            "Time from the API sending a call to its batch starting.",
            MODEL_LABELS,
            namespace=NAMESPACE,
            buckets=_LATENCY_BUCKETS,
        ),
        pending_requests=Gauge(
            "pending_requests",
            "Transcriptions waiting or running in API workers.",
            namespace=NAMESPACE,
            multiprocess_mode="livesum",
        ),
        upload_bytes_held=Gauge(
            "upload_bytes_held",
            "Request-body bytes held by API workers (in memory or spooled to disk).",
            namespace=NAMESPACE,
            multiprocess_mode="livesum",
        ),
        model_info=Gauge(
            "model_info",
            "The served model (value 1).",
            ["name", "version", "sha256"],
            namespace=NAMESPACE,
            multiprocess_mode="liveall",
        ),
        model_ready=Gauge(
            "model_ready",
            "1 once the model is loaded and warmed up; 0 while it loads, or after it failed to.",
            MODEL_LABELS,
            namespace=NAMESPACE,
            multiprocess_mode="livemax",
        ),
        segments_resent=Counter(
            "segments_resent",
            "Segments sent again after the model worker decoding them was lost.",
            namespace=NAMESPACE,
        ),
    )


@dataclass(frozen=True)
class ModelSeries:
    """A model service's series, bound to its model's label."""

    audio_seconds: Any
    decode_seconds: Any
    batch_rtf: Any
    batch_size: Any
    queue_wait_seconds: Any
    ready: Any


def model_series(model: str) -> ModelSeries:
    """The series of the model service serving the stored model named ``model``."""
    metrics = get_metrics()
    return ModelSeries(
        audio_seconds=metrics.audio_seconds.labels(model),
        decode_seconds=metrics.decode_seconds.labels(model),
        batch_rtf=metrics.batch_rtf.labels(model),
        batch_size=metrics.batch_size.labels(model),
        queue_wait_seconds=metrics.queue_wait_seconds.labels(model),
        ready=metrics.model_ready.labels(model),
    )
