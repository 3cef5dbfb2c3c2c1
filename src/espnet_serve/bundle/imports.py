"""Import objects named by dotted paths (``package.module.attr``)."""

from __future__ import annotations

from importlib import import_module
from typing import Any


def import_object(path: str) -> Any:
    """Import and return the object named by a dotted path.

    Args:
        path: Dotted path such as ``espnet2.bin.asr_inference.Speech2Text``.

    Returns:
        Any: The imported attribute.

    Raises:
        ValueError: If ``path`` has no module part.
        ImportError: If the module or the attribute cannot be imported.
    """
    module_path, _, name = path.rpartition(".")
    if not module_path or not name:
        raise ValueError(f"Expected a dotted import path like 'pkg.module.name', got {path!r}.")
    module = import_module(module_path)
    try:
        return getattr(module, name)
    except AttributeError as exc:
        raise ImportError(f"Module {module_path!r} has no attribute {name!r}.") from exc


def resolve_object(value: str | Any | None) -> Any:
    """Return ``value`` itself, or the object it names when it is a dotted path string."""
    return import_object(value) if isinstance(value, str) else value
