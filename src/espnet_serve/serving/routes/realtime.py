"""OpenAI's Realtime API, transcription sessions: ``WS /v1/realtime``."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from espnet_serve.serving.realtime.session import REALTIME_ROUTE, RealtimeSession

router = APIRouter()


@router.websocket(REALTIME_ROUTE)
async def realtime(websocket: WebSocket) -> None:
    """A transcription session (``?intent=transcription``; see :mod:`..realtime.protocol`)."""
    state = websocket.app.state
    await RealtimeSession(
        websocket,
        settings=state.settings,
        models=state.served_models,
        slots=state.realtime_slots,
        in_flight=state.in_flight,
        is_draining=state.is_draining,
    ).serve()
