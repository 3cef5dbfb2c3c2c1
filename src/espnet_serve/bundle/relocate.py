"""Make the paths inside a bundle's YAML files relocatable, and bind them again at load.

espnet2 reads the paths of a training config (``token_list``, a stats file, a
BPE model, ...) relative to the *current directory*, and ``espnet_model_zoo``
rewrites them into absolute paths of its cache. A stored bundle must work
from any directory and any location, so:

- at import (:func:`to_bundle_form`), the inference config's paths to bundle
  files become ``${recipe_dir}/<relpath>`` (``InferenceSession`` binds
  ``recipe_dir`` to the bundle root), and the other YAML files' paths become
  plain ``<relpath>``, as espnet2's own ``pack`` writes them;
- at load (:func:`materialize`), a scratch view of the bundle is laid out:
  symbolic links to the verified files, and copies of those other YAML files
  whose ``<relpath>`` values are bound to absolute paths in the view, exactly as
  espnet2's ``unpack`` binds them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

RECIPE_DIR_PREFIX = "${recipe_dir}/"
_RECIPE_DIR_REF = re.compile(r"\$\{recipe_dir\}/([^}\s'\"]+)")


def map_strings(value: Any, convert: Callable[[str], str]) -> Any:
    """Apply ``convert`` to every string inside nested mappings and lists."""
    if isinstance(value, str):
        return convert(value)
    if isinstance(value, dict):
        return {key: map_strings(item, convert) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [map_strings(item, convert) for item in value]
    return value


def _iter_strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _iter_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _iter_strings(item)


def _relpath_inside(root: Path, absolute: str) -> str | None:
    """The bundle-relative POSIX path of an absolute path below ``root``, else ``None``."""
    candidate = Path(os.path.normpath(absolute))
    for base in (root.absolute(), root.resolve()):
        if candidate != base and candidate.is_relative_to(base):
            return candidate.relative_to(base).as_posix()
    return None


def plain_relpath(value: str) -> str | None:
    """``value`` normalised as a relative POSIX path, or ``None`` if it cannot be one.

    Only plain relative paths count: no interpolation, no ``..`` escape, no
    absolute path, no multi-line text.
    """
    if not value or "\n" in value or "${" in value or os.path.isabs(value):
        return None
    normalised = os.path.normpath(value)
    if normalised == "." or normalised.split(os.sep, 1)[0] == "..":
        return None
    return Path(normalised).as_posix()


def bundle_file(root: Path, value: str) -> str | None:
    """The :func:`plain_relpath` of ``value`` when it names a file below ``root``, else ``None``."""
    relpath = plain_relpath(value)
    if relpath is None:
        return None
    try:
        return relpath if (root / relpath).is_file() else None
    except OSError:  # e.g. a long free-text value: name too long
        return None


def to_bundle_form(config: Any, root: Path, *, inference_config: bool) -> Any:
    """Rewrite a loaded YAML document's paths to bundle files in their relocatable form.

    Args:
        config: The loaded YAML document.
        root: The source bundle root the paths point into.
        inference_config: Whether the document is the inference config: its
            paths become ``${recipe_dir}/<relpath>`` (absolute ones and plain
            relative ones naming bundle files); other documents' absolute
            paths become ``<relpath>``.

    Returns:
        Any: The rewritten document (``config`` itself is not modified).
    """

    def convert(value: str) -> str:
        if os.path.isabs(value):
            relpath = _relpath_inside(root, value)
        else:
            relpath = bundle_file(root, value) if inference_config else None
        if relpath is None:
            return value
        return RECIPE_DIR_PREFIX + relpath if inference_config else relpath

    return map_strings(config, convert)


def referenced_files(config: Any, root: Path) -> set[str]:
    """Bundle files a document in bundle form refers to (``<relpath>`` or ``${recipe_dir}/...``)."""
    found: set[str] = set()
    for value in _iter_strings(config):
        candidates = _RECIPE_DIR_REF.findall(value) if "${recipe_dir}/" in value else [value]
        found.update(r for c in candidates if (r := bundle_file(root, c)) is not None)
    return found


def _bind(text: str, view: Path, files: set[str]) -> str:
    """YAML text with every ``<relpath>`` naming one of ``files`` made absolute in ``view``."""

    def convert(value: str) -> str:
        relpath = plain_relpath(value)
        return str(view / relpath) if relpath in files else value

    return yaml.safe_dump(map_strings(yaml.safe_load(text), convert), sort_keys=False)


def materialize(bundle_dir: Path, files: Iterable[str], bind: Iterable[str], view: Path) -> Path:
    """Lay out a loadable view of a stored bundle.

    Every file becomes a symbolic link to ``bundle_dir``'s copy, except the
    YAML files named by ``bind``, which are written with their relative bundle
    paths bound to absolute paths inside ``view``.

    Args:
        bundle_dir: The stored (verified) bundle.
        files: Every bundle-relative file path.
        bind: The YAML files whose relative paths espnet2 reads from the current directory.
        view: An empty directory to fill.

    Returns:
        Path: ``view``.
    """
    all_files, to_bind = set(files), set(bind)
    for relpath in sorted(all_files):
        target = view / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if relpath in to_bind:
            text = (bundle_dir / relpath).read_text(encoding="utf-8")
            target.write_text(_bind(text, view, all_files), encoding="utf-8")
        else:
            target.symlink_to(bundle_dir / relpath)
    return view
