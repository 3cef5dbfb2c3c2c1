"""Inspect and extract model archives safely (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``).

Model archives come from the internet. espnet2's ``unpack`` extracts tar
members without any filter, so a crafted archive could write outside its
cache directory. Every archive is inspected here before anything extracts it:
absolute names, ``..`` components, links pointing outside, device files and
archives over the size or member limits are rejected.
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from espnet_serve.bundle.errors import UnsafeArchiveError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what an archive may unpack to.

    Attributes:
        max_members: Most entries (files, directories, links) allowed.
        max_total_bytes: Most bytes all files may declare, unpacked.
    """

    max_members: int = 10_000
    max_total_bytes: int = 8 * 1024**3


@dataclass(frozen=True)
class _Entry:
    """One archive entry, format-independent."""

    name: str
    size: int
    is_dir: bool = False
    is_file: bool = False
    symlink_target: str | None = None
    hardlink_target: str | None = None


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a file with a supported archive suffix."""
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _tar_entries(path: Path) -> Iterator[_Entry]:
    with tarfile.open(path, mode="r:*") as archive:
        for member in archive:
            if member.isdev() or member.isfifo():
                raise UnsafeArchiveError(f"{path}: {member.name!r} is a device or FIFO entry.")
            yield _Entry(
                name=member.name,
                size=member.size,
                is_dir=member.isdir(),
                is_file=member.isfile(),
                symlink_target=member.linkname if member.issym() else None,
                hardlink_target=member.linkname if member.islnk() else None,
            )


def _zip_entries(path: Path) -> Iterator[_Entry]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                target = archive.read(info).decode("utf-8", "replace")
                yield _Entry(name=info.filename, size=0, symlink_target=target)
                continue
            file_type = stat.S_IFMT(mode)  # 0 when the writer recorded no Unix type
            if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchiveError(f"{path}: {info.filename!r} is not a file or directory.")
            yield _Entry(
                name=info.filename,
                size=info.file_size,
                is_dir=info.is_dir(),
                is_file=not info.is_dir(),
            )


def _entries(path: Path) -> Iterator[_Entry]:
    if zipfile.is_zipfile(path):
        return _zip_entries(path)
    if tarfile.is_tarfile(path):
        return _tar_entries(path)
    raise UnsafeArchiveError(f"{path} is not a tar or zip archive.")


def _safe_relative(name: str, archive: Path) -> PurePosixPath:
    """Return a member name as a relative path, or raise if it could leave the target."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or _WINDOWS_DRIVE.match(name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path.")
    if ".." in posix.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains a '..' component.")
    return posix


def _link_stays_inside(member: PurePosixPath, target: str, *, hardlink: bool) -> bool:
    """Whether a link target, read as tar/zip extraction would, stays inside the root."""
    if target.startswith("/") or PurePosixPath(target).is_absolute():
        return False
    base = PurePosixPath() if hardlink else member.parent
    depth = 0
    for part in (base / target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def check_archive(path: Path, limits: ArchiveLimits = ArchiveLimits()) -> list[str]:
    """Inspect every entry of an archive without extracting anything.

    Args:
        path: The archive.
        limits: Member-count and unpacked-size bounds.

    Returns:
        list[str]: The member names, in archive order.

    Raises:
        UnsafeArchiveError: On an absolute name, a ``..`` component, a link
            pointing outside the archive root, a device/FIFO entry, or an
            archive over ``limits``; also when ``path`` is not an archive.
    """
    names: list[str] = []
    total = 0
    for entry in _entries(path):
        relative = _safe_relative(entry.name, path)
        for target, hardlink in ((entry.symlink_target, False), (entry.hardlink_target, True)):
            if target is not None and not _link_stays_inside(relative, target, hardlink=hardlink):
                kind = "hard link" if hardlink else "symlink"
                raise UnsafeArchiveError(
                    f"{path}: {kind} {entry.name!r} -> {target!r} points outside the archive."
                )
        total += entry.size
        names.append(entry.name)
        if len(names) > limits.max_members:
            raise UnsafeArchiveError(f"{path}: more than {limits.max_members} members.")
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"{path}: unpacks to more than {limits.max_total_bytes} bytes "
                f"(member {entry.name!r} declares {entry.size})."
            )
    return names


def safe_extract(path: Path, target: Path, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Check an archive, then extract it into ``target``.

    Tar members are extracted with Python's ``data`` filter as a second line
    of defence (no device files, no links leaving ``target``, safe modes).

    Args:
        path: The archive.
        target: Destination directory (created if missing).
        limits: Member-count and unpacked-size bounds.

    Returns:
        Path: ``target``.

    Raises:
        UnsafeArchiveError: If :func:`check_archive` rejects the archive.
    """
    check_archive(path, limits)
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(target)
    else:
        with tarfile.open(path, mode="r:*") as archive:
            archive.extractall(target, filter="data")
    return target
