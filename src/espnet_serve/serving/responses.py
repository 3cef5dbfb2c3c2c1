"""A transcript in each of OpenAI's response formats, and as a server-sent event stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel

from espnet_serve.executors.base import TRANSCRIBE, TRANSLATE
from espnet_serve.pipeline.subtitles import to_srt, to_vtt
from espnet_serve.pipeline.types import Segment, Transcript
from espnet_serve.serving.errors import error_response
from espnet_serve.serving.protocol import (
    DurationUsage,
    ResponseFormat,
    TextDeltaEvent,
    TextDoneEvent,
    TranscriptionResponse,
    TranscriptionSegment,
    VerboseTranscriptionResponse,
    VerboseTranslationResponse,
)

EVENT_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def formatted_response(
    transcript: Transcript,
    response_format: ResponseFormat,
    *,
    language: str,
    words: bool = False,
    task: str = TRANSCRIBE,
) -> Response:
    """The response of a finished transcription (or ``task``: translation) in ``response_format``.

    Args:
        transcript: The decoded segments.
        response_format: The format asked for.
        language: The language to report (``verbose_json``): the speech's, or the translation's.
        words: Whether the words were asked for (``verbose_json``).
        task: ``transcribe`` or ``translate`` (its ``verbose_json`` has no words, no usage).
    """
    if response_format is ResponseFormat.TEXT:
        return PlainTextResponse(transcript.text)
    if response_format is ResponseFormat.SRT:
        return PlainTextResponse(to_srt(transcript.segments))
    if response_format is ResponseFormat.VTT:
        return PlainTextResponse(to_vtt(transcript.segments), media_type="text/vtt")
    segments = [TranscriptionSegment.of(s) for s in transcript.segments if s.text]
    if response_format is ResponseFormat.VERBOSE_JSON and task == TRANSLATE:
        translation = VerboseTranslationResponse(
            language=language, duration=transcript.duration, text=transcript.text, segments=segments
        )
        return JSONResponse(translation.model_dump())
    if response_format is ResponseFormat.VERBOSE_JSON:
        verbose = VerboseTranscriptionResponse(
            language=language,
            duration=transcript.duration,
            text=transcript.text,
            segments=segments,
            words=transcript.words if words else None,
            usage=DurationUsage(seconds=transcript.duration),
        )
        return JSONResponse(verbose.model_dump(exclude_none=True))
    return JSONResponse(TranscriptionResponse(text=transcript.text).model_dump())


def _event(event: BaseModel) -> bytes:
    return f"data: {json.dumps(event.model_dump())}\n\n".encode()


def event_stream(segments: AsyncIterator[Segment]) -> StreamingResponse:
    """The ``stream=true`` response: server-sent events as segments are decoded.

    A ``transcript.text.delta`` event per segment with text, in order, then
    ``transcript.text.done`` with the whole text (the deltas joined); a failure ends
    the stream with ``data: {"error": {...}}`` (the openai SDK raises it as ``APIError``).
    """

    async def events() -> AsyncIterator[bytes]:
        texts: list[str] = []
        try:
            async for segment in segments:
                if not segment.text:
                    continue
                delta = segment.text if not texts else f" {segment.text}"
                texts.append(segment.text)
                yield _event(TextDeltaEvent(delta=delta))
        except Exception as exc:
            _, body, _ = error_response(exc)
            yield _event(body)
            return
        yield _event(TextDoneEvent(text=" ".join(texts)))

    return StreamingResponse(events(), media_type="text/event-stream", headers=EVENT_STREAM_HEADERS)
