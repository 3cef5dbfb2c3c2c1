"""Realtime transcription over a WebSocket: OpenAI's Realtime API, transcription sessions."""
