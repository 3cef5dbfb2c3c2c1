"""The naive peer: FastAPI calling espnet2 ``Speech2Text`` once per request, behind a lock.

What a team would write first (``Speech2Text`` is not thread-safe, so one decode
at a time). Same route shape and the same audio ingest as espnet-serve, so the
benchmark compares serving designs, not decoders of uploads.

    python bench/naive_peer.py --port 3300     # serves the embedded model on 127.0.0.1
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from typing import Annotated

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile

from espnet_serve import InferenceSession
from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE
from espnet_serve.audio.ingest import IngestLimits, decode_audio

SAMPLE_RATE = 16000


def build_app() -> FastAPI:
    """The peer's app: one ``Speech2Text`` session, one decode at a time."""
    session = InferenceSession.from_pretrained(
        str(DEFAULT_MODEL_ARCHIVE),
        trust_user_code=True,
        downloader_kwargs={"cachedir": tempfile.mkdtemp(prefix="naive-peer-")},
    )
    lock = threading.Lock()
    app = FastAPI()

    def transcribe(data: bytes) -> str:
        audio = decode_audio(data, target_rate=SAMPLE_RATE, limits=IngestLimits()).samples
        with lock:
            return session(audio)["text"]

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        file: Annotated[UploadFile, File()], model: Annotated[str, Form()]
    ) -> dict[str, str]:
        data = await file.read()
        return {"text": await anyio.to_thread.run_sync(transcribe, data)}

    @app.get("/readyz")
    async def readyz() -> str:
        return "ok"

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning")
