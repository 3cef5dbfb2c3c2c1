"""API keys: ``Authorization: Bearer <key>`` on every route but the probes.

Keys are held only as sha256 digests (from ``ESPNET_SERVE_API_KEYS``, hashed on
load, and ``ESPNET_SERVE_API_KEY_HASHES_FILE``, e.g. a mounted Secret), compared
in constant time against every stored digest, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from espnet_serve.serving.errors import ApiError, refuse_websocket, send_error
from espnet_serve.serving.settings import ServeSettings

PROBES = frozenset({"/livez", "/readyz"})
METRICS = "/metrics"


def key_digest(key: str) -> str:
    """The lowercase hex sha256 of a key (what a key-hashes file holds)."""
    return hashlib.sha256(key.encode()).hexdigest()


def read_key_hashes(path: Path) -> frozenset[str]:
    """The digests in a key-hashes file (one per line; blank lines and ``#`` comments skipped).

    Raises:
        ValueError: If a line is not a 64-character hex sha256.
    """
    digests = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.split("#", 1)[0].strip().lower()
        if not entry:
            continue
        if len(entry) != 64 or any(c not in "0123456789abcdef" for c in entry):
            raise ValueError(f"{path}:{number} is not a hex sha256 of a key.")
        digests.add(entry)
    return frozenset(digests)


def configured_key_hashes(settings: ServeSettings) -> frozenset[str]:
    """Every accepted key's digest; empty when API keys are off."""
    keys = settings.api_keys.get_secret_value() if settings.api_keys else ""
    digests = {key_digest(key.strip()) for key in keys.split(",") if key.strip()}
    if settings.api_key_hashes_file is not None:
        digests |= read_key_hashes(settings.api_key_hashes_file)
    return frozenset(digests)


def _bearer_token(scope: Scope) -> str | None:
    header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ApiKeyMiddleware:
    """Answer 401 (OpenAI's shape) to a request without an accepted key.

    Args:
        app: The ASGI app behind.
        key_hashes: The accepted keys' sha256 digests (non-empty).
        protect_metrics: Whether ``/metrics`` needs a key too.
    """

    def __init__(self, app: ASGIApp, *, key_hashes: frozenset[str], protect_metrics: bool) -> None:
        self.app = app
        self.key_hashes = tuple(sorted(key_hashes))
        self.open_paths = PROBES if protect_metrics else PROBES | {METRICS}

    def _accepted(self, token: str) -> bool:
        digest = key_digest(token)
        matches = [hmac.compare_digest(digest, stored) for stored in self.key_hashes]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an authorised request (or a probe) on; refuse the rest with 401."""
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        if token is not None and self._accepted(token):
            await self.app(scope, receive, send)
            return
        message = (
            "Incorrect API key provided."
            if token is not None
            else "Missing API key: send it as 'Authorization: Bearer <key>'."
        )
        refusal = ApiError("invalid_api_key", message)
        challenge = [(b"www-authenticate", b"Bearer")]
        if scope["type"] == "websocket":
            await refuse_websocket(scope, send, refusal, challenge)
        else:
            await send_error(send, refusal, challenge)
