"""espnet-serve: serve packaged ESPnet models.

Importing the package has no side effects and loads nothing heavy: ``InferenceSession``
is imported on first use, and the offline guard (:mod:`espnet_serve.backends.offline`) is applied
where espnet2 is about to load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from espnet_serve.bundle.session import InferenceSession

__all__ = ["InferenceSession"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import ``InferenceSession`` lazily (``from espnet_serve import InferenceSession``)."""
    if name == "InferenceSession":
        from espnet_serve.bundle.session import InferenceSession

        return InferenceSession
    raise AttributeError(f"module 'espnet_serve' has no attribute {name!r}")
