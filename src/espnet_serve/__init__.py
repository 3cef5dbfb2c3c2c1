"""espnet-serve: serve packaged ESPnet models."""

from espnet_serve.offline import block_runtime_downloads

block_runtime_downloads()

from espnet_serve.session import InferenceSession  # noqa: E402

__all__ = ["InferenceSession"]
__version__ = "0.1.0"
