"""Fetch a model source into a local directory: a model tag, an archive or a directory.

Archives only ever reach :func:`espnet_serve.bundle.archive.safe_extract`: espnet2's
``unpack`` (which extracts without any filter) never sees an unchecked one.
Tags go through ``espnet_model_zoo``'s ``ModelDownloader.download``, which
fetches (a Zenodo archive, or a Hugging Face snapshot directory, honouring
``HF_HUB_OFFLINE`` and a pre-filled cache) without unpacking anything.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from espnet_serve.bundle.archive import ARCHIVE_SUFFIXES, is_archive, safe_extract

logger = logging.getLogger(__name__)

EXTRACT_DIRNAME = "unpacked"


@dataclass(frozen=True)
class FetchedSource:
    """A model source, available as a local directory.

    Attributes:
        root: The directory holding ``meta.yaml`` (read-only for callers).
        kind: ``"directory"``, ``"archive"`` or ``"tag"``.
        name: A short name of the source (archive stem, directory name or the tag).
        archive_sha256: The sha256 of the archive file, when the source was one.
    """

    root: Path
    kind: str
    name: str
    archive_sha256: str | None = None


def file_sha256(path: Path) -> str:
    """Return the hex sha256 digest of a file."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _archive_stem(path: Path) -> str:
    """File name without its archive suffix (``model.tar.gz`` -> ``model``)."""
    lowered = path.name.lower()
    suffix = next((s for s in ARCHIVE_SUFFIXES if lowered.endswith(s)), "")
    return path.name[: len(path.name) - len(suffix)]


def _looks_like_local_path(source: str) -> bool:
    """Whether a string that names no existing file was meant as a local path."""
    return source.startswith(("/", "./", "../", "~")) or source.lower().endswith(ARCHIVE_SUFFIXES)


def _extract(archive: Path, workdir: Path) -> Path:
    """Check and extract an archive into ``workdir``; return the extraction root."""
    logger.info("Checking and extracting %s", archive)
    return safe_extract(archive, workdir / EXTRACT_DIRNAME)


def fetch_source(source: str | Path, workdir: Path, cachedir: Path | None = None) -> FetchedSource:
    """Make a model source available as a local directory.

    Args:
        source: An unpacked bundle directory, a ``.zip`` / ``.tar.gz`` / ``.tgz``
            / ``.tar`` archive, or an ``espnet_model_zoo`` tag / Hugging Face
            repo id (``org/name`` or ``org/name@revision``).
        workdir: Empty scratch directory archives are extracted into.
        cachedir: The downloader's cache directory (``None``: its default).

    Returns:
        FetchedSource: Where the source lies, and what it was.

    Raises:
        FileNotFoundError: If ``source`` looks like a local path that does not exist.
        UnsafeArchiveError: If an archive has unsafe members or exceeds the limits.
    """
    local = Path(source).expanduser()
    if local.is_dir():
        return FetchedSource(root=local.absolute(), kind="directory", name=local.absolute().name)
    if local.is_file():
        return FetchedSource(
            root=_extract(local, workdir),
            kind="archive",
            name=_archive_stem(local),
            archive_sha256=file_sha256(local),
        )
    tag = str(source)
    if _looks_like_local_path(tag):
        raise FileNotFoundError(f"No such model directory or archive: {tag}")
    from espnet_model_zoo.downloader import ModelDownloader

    downloader = ModelDownloader(cachedir)
    logger.info("Fetching %s with espnet_model_zoo (cache: %s)", tag, downloader.cachedir)
    fetched = Path(downloader.download(tag, quiet=True))
    if fetched.is_dir():
        return FetchedSource(root=fetched.absolute(), kind="tag", name=tag)
    if not is_archive(fetched):
        raise ValueError(f"{tag} was fetched as {fetched}, which is not a supported archive.")
    return FetchedSource(
        root=_extract(fetched, workdir),
        kind="tag",
        name=tag,
        archive_sha256=file_sha256(fetched),
    )


UNPACKED_MARKER = ".espnet-serve-unpacked"


def unpack_bundle_archive(archive: Path, cachedir: Path) -> dict[str, str]:
    """Unpack a packed model as espnet2's ``unpack`` does, through the safe extraction.

    The result is espnet2's: the archive lands under ``cachedir`` (one directory per
    archive digest, reused once complete), each ``yaml_files`` config gets its member
    paths rewritten to absolute ones (espnet2's ``find_path_and_change_it_recursive``),
    and the artifact keys of ``meta.yaml`` map to their paths.

    Args:
        archive: A ``.tar.gz`` / ``.tgz`` / ``.tar`` / ``.zip`` with ``meta.yaml`` at its root.
        cachedir: Where unpacked archives are kept.

    Returns:
        dict[str, str]: Artifact key -> absolute path.

    Raises:
        UnsafeArchiveError: If the archive could write outside its target or is too big.
        BundleMetadataError: If ``meta.yaml`` is missing, malformed or names paths outside.
    """
    import shutil
    import tempfile

    target = cachedir / f"{_archive_stem(archive)}-{file_sha256(archive)[:16]}"
    if not (target / UNPACKED_MARKER).is_file():
        cachedir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=cachedir))
        try:
            _unpack_into(archive, staging, final_root=target)
            (staging / UNPACKED_MARKER).touch()
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    entries = _meta_entries(archive, target)
    return {key: str(target / relpath) for key, relpath in entries.items()}


def _meta_entries(archive: Path, root: Path) -> dict[str, str]:
    """``meta.yaml``'s ``yaml_files`` and ``files``, each checked to lie inside ``root``."""
    import yaml

    from espnet_serve.bundle.errors import BundleMetadataError

    meta_path = root / "meta.yaml"
    meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None
    if not isinstance(meta, dict) or not isinstance(meta.get("yaml_files", {}), dict):
        raise BundleMetadataError(f"{archive}: no meta.yaml with 'files' and 'yaml_files'.")
    entries = {**meta.get("yaml_files", {}), **(meta.get("files") or {})}
    for key, relpath in entries.items():
        if not (root / str(relpath)).resolve().is_relative_to(root.resolve()):
            raise BundleMetadataError(f"{archive}: meta.yaml {key}: {relpath!r} is outside it.")
    return {key: str(relpath) for key, relpath in entries.items()}


def _unpack_into(archive: Path, target: Path, *, final_root: Path) -> None:
    """Safe-extract ``archive`` into ``target``; bind its configs' member paths to ``final_root``.

    ``target`` is a staging directory that is renamed to ``final_root`` once complete.
    """
    import yaml
    from espnet2.main_funcs.pack_funcs import find_path_and_change_it_recursive

    safe_extract(archive, target)
    yaml_files = _meta_entries(archive, target)
    members = sorted(
        path.relative_to(target).as_posix() for path in target.rglob("*") if path.is_file()
    )
    meta = yaml.safe_load((target / "meta.yaml").read_text(encoding="utf-8"))
    for key in meta.get("yaml_files", {}):
        config_path = target / yaml_files[key]
        document = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        for member in members:
            document = find_path_and_change_it_recursive(document, member, str(final_root / member))
        config_path.write_text(yaml.safe_dump(document), encoding="utf-8")
