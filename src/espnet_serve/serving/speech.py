"""``SpeechHandler``: one ``/v1/audio/speech`` request's path, text → sentences → audio bytes.

The model, task, voice and speed are checked before anything is spoken; the text is
split into sentences (:func:`~espnet_serve.pipeline.sentences.split_sentences`), each
spoken by one model-service call. The first sentence is spoken before the response
starts, so any error is still a plain error response. Then ``wav`` and ``pcm`` stream
each sentence as it is ready (the next one is already being spoken); ``mp3``, ``opus``
and ``flac`` are encoded once the last sentence is in. A later sentence that fails cuts
the stream off (the client sees an incomplete body, never a silently short one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import numpy as np
from fastapi.responses import Response, StreamingResponse

from espnet_serve.audio.encode import FORMATS, StreamEncoder, encode
from espnet_serve.executors.base import SYNTHESIZE
from espnet_serve.pipeline.sentences import split_sentences
from espnet_serve.serving.errors import STATUS, ApiError, InternalError
from espnet_serve.serving.handler import count_failure
from espnet_serve.serving.metrics import get_metrics
from espnet_serve.serving.protocol import SpeechRequest
from espnet_serve.serving.rpc import SynthesisRequest
from espnet_serve.serving.served_model import ServedModels

logger = logging.getLogger(__name__)
SPEECH_ROUTE = "/v1/audio/speech"


class SpeechHandler:
    """Speaks the requests of ``/v1/audio/speech`` with the synthesis model each names.

    Args:
        models: The served models (names, tasks, voices, speed control, their clients).
    """

    def __init__(self, models: ServedModels) -> None:
        self.models = models

    async def create_speech(self, request: SpeechRequest) -> Response:
        """The audio of ``request.input`` in ``request.response_format``.

        Raises:
            ApiError: 404 for another model; 400 for a model that does not speak, an
                unknown voice, a speed it cannot take, or text it cannot speak; 5xx when
                the model service fails.
        """
        try:
            return await self._speech(request)
        except BaseException as exc:
            count_failure(SPEECH_ROUTE, exc)
            raise

    async def _speech(self, request: SpeechRequest) -> Response:
        model = await self.models.named(request.model, SYNTHESIZE)
        await model.check_task(SYNTHESIZE)
        info = await model.info()
        voice = await model.voice(request.voice)
        await model.check_speed(request.speed)
        sentences = split_sentences(request.input)

        async def speak(text: str) -> np.ndarray:
            message = SynthesisRequest(text=text, voice=voice, speed=request.speed)
            result = await model.client.synthesize(message)
            if result.failure is None:
                return result.waveform()
            code, what = result.failure.code, result.failure.message
            if STATUS.get(code, 500) >= 500:
                raise InternalError(what, code=code)
            raise ApiError(code, what, param="input")

        audio_format = FORMATS[request.response_format]
        first = await speak(sentences[0])
        if not audio_format.streamable:
            waves = [first] + [await speak(sentence) for sentence in sentences[1:]]
            data = await anyio.to_thread.run_sync(
                encode, np.concatenate(waves), info.sample_rate, audio_format.name
            )
            get_metrics().requests.labels(SPEECH_ROUTE, "ok").inc()
            return Response(data, media_type=audio_format.media_type)
        encoder = StreamEncoder(info.sample_rate, audio_format.name, len(sentences))
        return StreamingResponse(
            _streamed(first, sentences[1:], speak, encoder), media_type=audio_format.media_type
        )


async def _streamed(
    first: np.ndarray,
    rest: list[str],
    speak: Callable[[str], Awaitable[np.ndarray]],
    encoder: StreamEncoder,
) -> AsyncIterator[bytes]:
    """Each sentence's bytes as it is ready, the next sentence already being spoken."""
    upcoming = iter(rest)
    pending = _spoken(speak, next(upcoming, None))
    try:
        yield encoder.chunk(first)
        while pending is not None:
            samples = await pending
            pending = _spoken(speak, next(upcoming, None))
            yield encoder.chunk(samples)
    except BaseException as exc:
        count_failure(SPEECH_ROUTE, exc)
        if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
            logger.error("Speech stream cut off after a failed sentence: %s", exc)
        raise
    finally:
        if pending is not None:
            pending.cancel()
    get_metrics().requests.labels(SPEECH_ROUTE, "ok").inc()


def _spoken(
    speak: Callable[[str], Awaitable[np.ndarray]], sentence: str | None
) -> asyncio.Task[np.ndarray] | None:
    """A task speaking ``sentence`` (``None`` when there is none left)."""
    return None if sentence is None else asyncio.ensure_future(speak(sentence))
