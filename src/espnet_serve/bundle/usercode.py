"""Bundled user code: decide whether it may run, and put it on the import path.

A published bundle may ship recipe code (``src/`` by default) that its
inference config references, e.g. ``output_fn: src.output.output_fn``.
Nothing from a bundle is importable until the caller passes
``trust_user_code=True``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import invalidate_caches
from pathlib import Path
from typing import Any

from espnet_serve.bundle.errors import UntrustedUserCodeError, UserCodePathError

logger = logging.getLogger(__name__)
# The command-line flag (and the ``trust_user_code`` argument) that lets bundled code run.
TRUST_FLAG = "--trust-user-code"

DEFAULT_USER_CODE_PATHS: tuple[str, ...] = ("src",)


def user_code_entries(
    requested: Sequence[str] | None, from_metadata: Sequence[str] | None
) -> list[str]:
    """Pick the bundle-relative import roots: the caller's, else ``meta.yaml``'s, else ``src``."""
    if requested is not None:
        return [str(entry) for entry in requested]
    if from_metadata is not None:
        return [str(entry) for entry in from_metadata]
    return list(DEFAULT_USER_CODE_PATHS)


def references_user_code(value: Any, entries: Iterable[str]) -> bool:
    """Whether a config value holds a dotted path into a user-code root (``src.x.y``)."""
    prefixes = tuple(f"{Path(entry).name}." for entry in entries)
    if isinstance(value, str):
        return value.startswith(prefixes)
    if isinstance(value, Mapping):
        return any(references_user_code(item, entries) for item in value.values())
    if isinstance(value, list | tuple):
        return any(references_user_code(item, entries) for item in value)
    return False


def user_code_allowed(
    *, enable_user_code: bool | None, trust_user_code: bool, referenced: bool
) -> bool:
    """Decide whether bundled user code is activated.

    Args:
        enable_user_code: The caller's explicit choice; ``None`` means "as the config needs".
        trust_user_code: The caller's explicit opt-in to running bundled code.
        referenced: Whether the config or arguments reference user-code modules.

    Returns:
        bool: ``True`` when user code must be put on the import path.

    Raises:
        UntrustedUserCodeError: If user code is enabled or referenced without trust.
    """
    if enable_user_code:
        if not trust_user_code:
            raise UntrustedUserCodeError(
                "enable_user_code=True runs code shipped inside the model bundle; "
                "pass trust_user_code=True to allow it."
            )
        return True
    if referenced:
        if not trust_user_code:
            raise UntrustedUserCodeError(
                "This model's inference config references code bundled with the model "
                "(e.g. its output_fn). Pass trust_user_code=True to allow importing it."
            )
        return True
    return False


def resolve_import_roots(bundle_root: Path, entries: Sequence[str]) -> list[Path]:
    """Return the bundle root followed by its existing user-code roots.

    Args:
        bundle_root: The unpacked bundle (or recipe) directory.
        entries: Bundle-relative import roots such as ``src``.

    Returns:
        list[Path]: Unique import roots, bundle root first.

    Raises:
        UserCodePathError: If an entry resolves outside the bundle root.
    """
    root = bundle_root.resolve()
    roots = [bundle_root]
    for entry in entries:
        candidate = (bundle_root / entry).resolve()
        if not candidate.is_relative_to(root):
            raise UserCodePathError(
                f"User-code path {entry!r} resolves to {candidate}, outside the bundle root {root}."
            )
        if not candidate.is_dir():
            logger.warning("User-code path %s does not exist in %s; skipped.", entry, root)
            continue
        if candidate not in roots:
            roots.append(candidate)
    return roots


def _top_level_modules(root: Path) -> set[str]:
    """Names importable from ``root``: its own name, its modules and its packages."""
    names = {root.name}
    for child in root.iterdir():
        if child.suffix == ".py" and child.stem != "__init__":
            names.add(child.stem)
        elif child.is_dir() and (child / "__init__.py").is_file():
            names.add(child.name)
    return names


def activate_user_code(import_roots: Sequence[Path]) -> None:
    """Prepend import roots to ``sys.path`` and forget same-named modules already imported.

    Forgetting stale modules makes a second bundle's ``src.output`` load from
    that bundle, not from the first one imported in this process.
    """
    names = set().union(*(_top_level_modules(r) for r in import_roots if r.is_dir()))
    for loaded in list(sys.modules):
        if loaded.split(".", 1)[0] in names:
            del sys.modules[loaded]
    for root in reversed([str(r) for r in import_roots]):
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)
    invalidate_caches()
    logger.info("Bundled user code enabled from %s", ", ".join(map(str, import_roots)))
