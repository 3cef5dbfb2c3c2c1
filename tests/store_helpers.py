"""Helpers of the model-store tests: crafted bundles and archives."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import bentoml
import yaml

from espnet_serve.bundle.spec import ModelSpec


def tree(root: Path) -> set[Path]:
    """Every path below ``root``."""
    return set(root.rglob("*"))


def copy_bundle(bundle_dir: Path, target: Path) -> Path:
    """A private, writable copy of a bundle directory."""
    return Path(shutil.copytree(bundle_dir, target))


def read_yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write_yaml(path: Path, document: object) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def yaml_strings(document: object) -> list[str]:
    """Every string value of a YAML document."""
    if isinstance(document, str):
        return [document]
    if isinstance(document, dict):
        return [s for value in document.values() for s in yaml_strings(value)]
    if isinstance(document, list):
        return [s for value in document for s in yaml_strings(value)]
    return []


def with_token_list_file(bundle_dir: Path) -> Path:
    """Move the train config's inline token list into ``data/tokens.txt`` (not in meta.yaml).

    That is how espnet2 recipes pack most models: the config names a file,
    relative to the recipe directory, which travels as an extra archive member.
    """
    config_path = bundle_dir / "exp" / "asr" / "config.yaml"
    config = read_yaml(config_path)
    assert isinstance(config, dict)
    tokens = bundle_dir / "data" / "tokens.txt"
    tokens.parent.mkdir(parents=True)
    tokens.write_text("\n".join(config["token_list"]) + "\n", encoding="utf-8")
    config["token_list"] = "data/tokens.txt"
    write_yaml(config_path, config)
    return bundle_dir


def hf_cache_from_bundle(bundle_dir: Path, cachedir: Path, repo_id: str) -> Path:
    """Lay out a Hugging Face hub cache holding ``bundle_dir`` as ``repo_id``'s snapshot.

    Snapshot files are symlinks into ``blobs/`` and ``refs/main`` names the
    revision, as ``huggingface_hub`` writes them.
    """
    repo = cachedir / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    for index, path in enumerate(sorted(p for p in bundle_dir.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"{index:064x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(bundle_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def _add_bytes(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(payload)
    archive.addfile(member, io.BytesIO(payload))


def _add_link(archive: tarfile.TarFile, name: str, kind: bytes, target: str) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = target
    archive.addfile(member)


def _add_huge_header(archive: tarfile.TarFile, name: str) -> None:
    """A member header declaring 1 TiB, with no data behind it."""
    member = tarfile.TarInfo(name)
    member.size = 1 << 40
    archive.fileobj.write(member.tobuf(archive.format, archive.encoding, archive.errors))


META = b"files: {asr_model_file: exp/asr/model.pth}\nyaml_files: {}\n"


def crafted_archive(path: Path, case: str, outside: Path) -> Path:
    """A ``.tar.gz`` model archive with one unsafe trait, named by ``case``.

    Args:
        path: The archive to write.
        case: ``dotdot``, ``absolute``, ``symlink_out``, ``hardlink_out``,
            ``huge`` or ``no_meta``.
        outside: An absolute path outside every target, the archive aims at it.
    """
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        if case != "no_meta":
            _add_bytes(archive, "meta.yaml", META)
        _add_bytes(archive, "exp/asr/model.pth", b"weights")
        if case == "dotdot":
            _add_bytes(archive, f"exp/../../../../../../../../{outside.relative_to('/')}", b"x")
        elif case == "absolute":
            _add_bytes(archive, str(outside), b"x")
        elif case == "symlink_out":
            _add_link(archive, "exp/asr/link", tarfile.SYMTYPE, str(outside))
        elif case == "hardlink_out":
            _add_link(archive, "exp/asr/hard", tarfile.LNKTYPE, f"../../{outside.name}")
        elif case == "huge":
            _add_huge_header(archive, "exp/asr/huge.bin")
    return path


def stage_crafted_archive(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """Write a crafted archive under ``tmp_path/work``, aimed at ``tmp_path/outside``.

    Returns:
        The archive, and the outside path it tries to write (absent afterwards).
    """
    outside = tmp_path / "outside" / f"evil-{case}.txt"
    outside.parent.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    return crafted_archive(work / f"{case}.tar.gz", case, outside), outside


CRAFTED_CASES = ("dotdot", "absolute", "symlink_out", "hardlink_out", "huge", "no_meta")


def stored_spec(tag: str | bentoml.Tag) -> ModelSpec:
    """The spec recorded when the stored model ``tag`` was imported."""
    return ModelSpec.model_validate(bentoml.models.get(tag).info.metadata)
