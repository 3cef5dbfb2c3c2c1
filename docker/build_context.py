"""Lay out a Bento and its models as an image build context, as ``bentoml containerize`` does.

``bentoml containerize`` needs a Docker-compatible builder and then pulls the Bento's base image;
this makes the same ``bento/`` tree (the Bento directory plus ``models/<name>/<version>/`` from the
model store) for ``docker/Containerfile`` to copy. Run with the project's venv::

    python docker/build_context.py espnet-serve:latest build/image/context
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import bentoml


def write_context(bento_tag: str, out_dir: Path) -> Path:
    """Copy the Bento and every model it serves into ``out_dir/bento``.

    Args:
        bento_tag: The Bento to lay out (``name:version`` or ``name:latest``).
        out_dir: The build context directory; its ``bento/`` is replaced.

    Returns:
        Path: The ``bento/`` directory written.
    """
    bento = bentoml.get(bento_tag)
    target = out_dir / "bento"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(bento.path, target)
    for ref in bento.info.all_models:
        model = bentoml.models.get(ref.tag)
        shutil.copytree(model.path, target / "models" / model.tag.name / model.tag.version)
        (target / "models" / model.tag.name / "latest").write_text(model.tag.version)
    make_world_readable(target)
    return target


def make_world_readable(root: Path) -> None:
    """Directories 0755, files 0644 (0755 when executable): the image's user is not their owner.

    The model store writes private files; in the image they belong to root and are read by the
    service's user.
    """
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o100
        path.chmod(0o755 if executable else 0o644)


def main() -> None:
    """Command line: ``build_context.py BENTO_TAG OUT_DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bento_tag")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    bento = bentoml.get(args.bento_tag)
    print(f"context: {write_context(args.bento_tag, args.out_dir)} ({bento.tag})")


if __name__ == "__main__":
    main()
