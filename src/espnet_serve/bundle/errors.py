"""Typed exceptions raised by espnet-serve.

Each subclasses the built-in type that the reference ``InferenceSession``
raises in the same situation, so ``except ValueError`` style callers keep
working while new callers can catch the precise condition.
"""

from __future__ import annotations


class UntrustedUserCodeError(ValueError):
    """Bundled user code would run, but the caller did not opt in with trust."""


class UserCodePathError(ValueError):
    """A user-code import root is missing or resolves outside the bundle root."""


class BundleMetadataError(ValueError):
    """A bundle's ``meta.yaml`` cannot be read or does not have the expected shape."""


class InferenceConfigError(ValueError):
    """An inference config is malformed (no ``model`` node, bad ``defaults`` entry, ...)."""


class BackendResolutionError(RuntimeError):
    """No way to build a backend: no inference config and no ``backend_class``."""


class UnsafeArchiveError(ValueError):
    """A model archive could write outside its target, or exceeds the unpack limits."""


class BundleIntegrityError(RuntimeError):
    """A stored bundle's files differ from the sha256 digests recorded when it was imported."""
