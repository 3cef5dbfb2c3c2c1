"""Service settings, read once from ``ESPNET_SERVE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_TAG = "espnet-digits-asr:latest"
# A setting's value that leaves it to the machine (:mod:`espnet_serve.serving.placement`).
AUTO = "auto"
# uvicorn's idle keep-alive timeout for `bentoml serve --timeout-keep-alive` (BentoML has no
# setting for it): longer than the clients' pool expiry (httpx and the openai SDK: 5 s, which
# is uvicorn's default and races them; aiohttp: 15 s). The Makefile, the image and the chart
# pass the same value (tests/deploy/test_helm_chart.py checks).
KEEP_ALIVE_SECONDS = 75


class ServeSettings(BaseSettings):
    """Every knob of the service; each field is the env var ``ESPNET_SERVE_<NAME>``.

    Attributes:
        model_tag: BentoML model-store tag of the bundle to serve, or several,
            comma-separated: one model service each, the first model first on
            ``/v1/models`` (a built Bento's ``model_tag`` argument takes precedence).
        batched_backend: Serve a bundle whose model is espnet2's per-utterance
            ``Speech2Text`` with ``BatchedSpeech2Text`` (same options, same
            hypotheses, one padded pass per batch); false serves the bundle's own.
        max_batch_size: Most segments the model service decodes in one call: the
            largest batch BentoML's adaptive batcher forms, and the backend's largest
            padded bucket.
        max_segments_in_flight: Most segments of one request sent to the model
            service at once (a long recording fills batches by itself up to this).
        max_audio_bytes: Largest accepted upload, in bytes (413 above); the upload
            is spooled to disk, not held in memory.
        max_audio_seconds: Longest accepted audio, in seconds (413 above); long
            recordings are split by voice activity and decoded segment by segment.
        max_enhancement_seconds: Longest recording an enhancement model takes at once
            (413 above): it is enhanced whole, its tracks held in memory.
        upload_grace_seconds: How long an upload may take before its pace is checked.
        min_upload_bytes_per_second: The slowest average pace of an upload after the
            grace; a slower or stalled one (a slowloris) is cut off with 408. An upload
            still arriving holds no admission slot.
        max_upload_bytes_held: Most request-body bytes one API worker holds at once
            (each upload: up to 1 MiB in memory, the rest spooled to disk); past it, 503
            with ``Retry-After``. At least ``max_audio_bytes``.
        min_sample_rate: Lowest accepted sample rate of an upload, in Hz (400 below).
        max_sample_rate: Highest accepted sample rate of an upload, in Hz (400 above).
        max_channels: Most channels an upload may have (400 above).
        max_pending_requests: The admission limit: transcriptions one API worker
            lets wait or run at once, counted from when their body has arrived; more
            are refused with 503 and ``Retry-After``, before their audio is decoded. It
            is the only place requests are shed (the model service's batcher never drops
            one).
        retry_after_seconds: The ``Retry-After`` value sent with a 503.
        request_timeout_seconds: BentoML traffic timeout of the model service: the
            longest one clip (a segment) may wait and decode (504 above).
        api_timeout_seconds: BentoML traffic timeout of the API service: the longest a
            request may take to start its answer (a long recording transcribed without
            ``stream=true`` answers only at the end).
        drain_timeout_seconds: After SIGTERM, the longest a worker keeps serving
            the requests it accepted before it exits anyway.
        drain_quiet_seconds: After SIGTERM, the model service exits once it has had
            no request in flight for this long (the API service may still be
            sending what it accepted).
        model_aliases: Comma-separated model names accepted as a served speech-to-text
            model (clients send ``whisper-1`` by habit).
        speech_model_aliases: Comma-separated model names accepted as a served speech
            synthesis model (OpenAI's ``tts-1``, ...).
        api_keys: Comma-separated API keys; with these or ``api_key_hashes_file``,
            every route but ``/livez`` and ``/readyz`` needs ``Authorization: Bearer``.
        api_key_hashes_file: A file of key hashes (lowercase hex sha256 of each key,
            one per line; ``#`` comments), e.g. a mounted Kubernetes Secret.
        protect_metrics: Whether ``/metrics`` needs a key too (when keys are on).
        api_workers: Worker processes of the HTTP API service; ``auto``: one per CPU
            where the models run in the API workers, else one.
        model_in_process: Each API worker loads and batches the models itself
            (:mod:`~espnet_serve.serving.local_model`) and no model service runs: no HTTP
            hop and no pickling between the two; each worker holds its own copy of every
            model. Off, one model service worker per model batches every API worker's
            segments (a GPU pod, the chart's split mode, a model too large to copy).
            ``auto``: on without a GPU when the models are small
            (:func:`~espnet_serve.serving.placement.resolve_placement`).
        model_threads: Torch threads of each model worker (the intra-op pool). Unset:
            torch's default where the model has its worker of its own; where the models run
            in the API workers, the pod's CPUs shared out among them (at least one each).
            A synthesised or enhanced waveform equals espnet2's run with the same count
            (float sums are ordered by the threads; transcripts were equal either way).
        gpu_count: GPUs the model service asks for (0 runs it on CPU).
        warmup: Decode two speech-like clips (and require transcripts) before reporting ready.
        max_realtime_sessions: Most ``/v1/realtime`` sessions one API worker holds at once;
            another is refused with an error event and close 1013 (try again later).
        realtime_idle_seconds: A realtime session that sends no event for this long is
            closed (an error event, then close 1008).
        realtime_max_ahead_seconds: How far a realtime session's audio may run ahead of
            real time (audio sent faster than it is spoken): past it, an error event and
            close 1008. It bounds what one session can queue.
        realtime_max_turn_seconds: Most audio a realtime session without server VAD holds
            before it commits (an error event and close 1009 past it).
    """

    model_config = SettingsConfigDict(env_prefix="ESPNET_SERVE_", extra="ignore")

    model_tag: str = DEFAULT_MODEL_TAG
    batched_backend: bool = True
    max_batch_size: int = Field(default=32, ge=1)
    max_segments_in_flight: int = Field(default=32, ge=1)
    max_audio_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    max_audio_seconds: float = Field(default=4 * 3600.0, gt=0)
    max_enhancement_seconds: float = Field(default=600.0, gt=0)
    upload_grace_seconds: float = Field(default=10.0, gt=0)
    min_upload_bytes_per_second: int = Field(default=8 * 1024, ge=1)
    max_upload_bytes_held: int = Field(default=4 * 1024**3, ge=1)
    min_sample_rate: int = Field(default=8000, ge=1)
    max_sample_rate: int = Field(default=384000, ge=1)
    max_channels: int = Field(default=32, ge=1)
    max_pending_requests: int = Field(default=128, ge=1)
    retry_after_seconds: int = Field(default=1, ge=0)
    request_timeout_seconds: float = Field(default=120.0, gt=0)
    api_timeout_seconds: float = Field(default=3600.0, gt=0)
    drain_timeout_seconds: float = Field(default=30.0, gt=0)
    drain_quiet_seconds: float = Field(default=2.0, ge=0)
    model_aliases: str = "whisper-1"
    speech_model_aliases: str = "tts-1,tts-1-hd,gpt-4o-mini-tts"
    api_keys: SecretStr | None = None
    api_key_hashes_file: Path | None = None
    protect_metrics: bool = False
    api_workers: Annotated[int, Field(ge=1)] | Literal["auto"] = AUTO
    model_in_process: bool | Literal["auto"] = AUTO
    model_threads: int | None = Field(default=None, ge=1)
    gpu_count: int = Field(default=1, ge=0)
    warmup: bool = True
    max_realtime_sessions: int = Field(default=64, ge=1)
    realtime_idle_seconds: float = Field(default=60.0, gt=0)
    realtime_max_ahead_seconds: float = Field(default=15.0, gt=0)
    realtime_max_turn_seconds: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _one_upload_fits(self) -> ServeSettings:
        if self.max_upload_bytes_held < self.max_audio_bytes:
            raise ValueError(
                f"max_upload_bytes_held ({self.max_upload_bytes_held}) is below "
                f"max_audio_bytes ({self.max_audio_bytes}): the largest upload could never fit"
            )
        return self

    def aliases(self, *, speech: bool = False) -> frozenset[str]:
        """The model names accepted besides its own by a speech-to-text (or synthesis) model."""
        names = self.speech_model_aliases if speech else self.model_aliases
        return frozenset(name.strip() for name in names.split(",") if name.strip())


@lru_cache(maxsize=1)
def get_settings() -> ServeSettings:
    """Return the process-wide settings (read from the environment on first use)."""
    return ServeSettings()
