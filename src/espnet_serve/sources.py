"""Fetch a model source into a local directory: a model tag, an archive or a directory.

Archives only ever reach :func:`espnet_serve.archive.safe_extract`: espnet2's
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

from espnet_serve.archive import ARCHIVE_SUFFIXES, is_archive, safe_extract

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
