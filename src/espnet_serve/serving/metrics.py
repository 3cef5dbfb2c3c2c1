"""Prometheus series of espnet-serve, exported beside BentoML's own on ``/metrics``.

BentoML runs several worker processes and exports metrics in Prometheus
multiprocess mode; a worker sets ``PROMETHEUS_MULTIPROC_DIR`` only after the
service module is imported, so ``prometheus_client`` is imported and the
series are created on first use (inside a service's ``__init__``), never at
import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

NAMESPACE = "espnet_serve"
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
    segments_resent: Any


@lru_cache(maxsize=1)
def get_metrics() -> ServiceMetrics:
    """Create the series once per process (after the worker set up multiprocess mode)."""
    from prometheus_client import Counter, Gauge, Histogram

    return ServiceMetrics(
        audio_seconds=Counter(
            "audio_seconds", "Seconds of audio transcribed.", namespace=NAMESPACE
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
            "Wall time of one batched decode.",
            namespace=NAMESPACE,
            buckets=_LATENCY_BUCKETS,
        ),
        batch_rtf=Histogram(
            "batch_real_time_factor",
            "Decode time divided by the batch's audio duration.",
            namespace=NAMESPACE,
            buckets=_RTF_BUCKETS,
        ),
        batch_size=Histogram(
            "batch_size",
            "Samples per model call.",
            namespace=NAMESPACE,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        ),
        queue_wait_seconds=Histogram(
            "queue_wait_seconds",
            "Time from the API sending a clip to its batch starting.",
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
        segments_resent=Counter(
            "segments_resent",
            "Segments sent again after the model worker decoding them was lost.",
            namespace=NAMESPACE,
        ),
    )
