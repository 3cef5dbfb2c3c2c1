"""``EnhancementHandler``: one ``/v1/audio/enhancements`` request, upload → tracks → audio.

The upload goes through the transcriptions' ingest (declared type, size, header
checks, mixed down to mono, resampled with soxr to the model's rate), whole: an
enhancement model takes the recording at once, so its length is bounded by
``max_enhancement_seconds``. The answer is one ``wav`` or ``flac`` file at the
model's rate with a channel per track: the speakers a separation model pulls
apart, or the one voice an enhancement model cleans.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import UploadFile
from fastapi.responses import Response

from espnet_serve.audio.encode import TRACK_FORMATS, encode_tracks
from espnet_serve.audio.ingest import IngestLimits, check_content_type, decode_audio
from espnet_serve.executors.base import ENHANCE
from espnet_serve.serving.errors import STATUS, ApiError, InternalError
from espnet_serve.serving.handler import count_failure
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.protocol import EnhancementForm
from espnet_serve.serving.rpc import EnhanceRequest
from espnet_serve.serving.served_model import ServedModels
from espnet_serve.serving.settings import ServeSettings

ENHANCEMENTS_ROUTE = "/v1/audio/enhancements"
TRACKS_HEADER = "X-Audio-Tracks"  # how many tracks (channels) the answer holds


class EnhancementHandler:
    """Enhances or separates uploads with the model each names.

    Args:
        settings: Upload limits and the longest recording.
        models: The served models (names, tasks, rates, their clients).
    """

    def __init__(self, settings: ServeSettings, models: ServedModels) -> None:
        self.settings = settings
        self.models = models

    async def create_enhancement(self, upload: UploadFile, form: EnhancementForm) -> Response:
        """The upload's tracks, a channel each, in ``form.response_format``.

        Raises:
            ApiError / AudioInputError: 404 for another model, 400 for a model that does
                not enhance or audio that cannot be read, 413 for too much of it; 5xx when
                the model service fails.
        """
        try:
            response = await self._enhancement(upload, form)
        except BaseException as exc:
            count_failure(ENHANCEMENTS_ROUTE, exc)
            raise
        get_metrics().requests.labels(ENHANCEMENTS_ROUTE, "ok").inc()
        return response

    async def _enhancement(self, upload: UploadFile, form: EnhancementForm) -> Response:
        model = await self.models.named(form.model, ENHANCE)
        await model.check_task(ENHANCE)
        info = await model.info()
        check_content_type(upload.content_type)
        if (upload.size or 0) > self.settings.max_audio_bytes:
            raise ApiError(
                "audio_too_large",
                f"File is over {self.settings.max_audio_bytes} bytes.",
                param="file",
            )
        limits = IngestLimits(
            min_sample_rate=self.settings.min_sample_rate,
            max_sample_rate=self.settings.max_sample_rate,
            max_channels=self.settings.max_channels,
            max_seconds=min(self.settings.max_audio_seconds, self.settings.max_enhancement_seconds),
        )
        audio = await anyio.to_thread.run_sync(
            lambda: decode_audio(upload.file, target_rate=info.sample_rate, limits=limits)
        )
        result = await model.client.enhance(EnhanceRequest(samples=audio.samples))
        if result.failure is not None:
            code, what = result.failure.code, result.failure.message
            if STATUS.get(code, 500) >= 500:
                raise InternalError(what, code=code)
            raise ApiError(code, what, param="file")
        tracks = result.waveforms()
        audio_format = TRACK_FORMATS[form.response_format]
        data = await anyio.to_thread.run_sync(
            encode_tracks, tracks, info.sample_rate, audio_format.name
        )
        return Response(
            data,
            media_type=audio_format.media_type,
            headers={TRACKS_HEADER: str(tracks.shape[1])},
        )
