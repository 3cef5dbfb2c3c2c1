"""Archive inspection: crafted archives are rejected before anything is extracted."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from espnet_serve import InferenceSession
from espnet_serve.bundle.archive import ArchiveLimits, check_archive, safe_extract
from espnet_serve.bundle.errors import UnsafeArchiveError


def make_tar(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as archive:
        meta = tarfile.TarInfo("meta.yaml")
        meta.size = len(b"files: {}\n")
        archive.addfile(meta, io.BytesIO(b"files: {}\n"))
        for member in members:
            data = io.BytesIO(payload) if member.isfile() else None
            if member.isfile():
                member.size = len(payload)
            archive.addfile(member, data)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = linkname
    return member


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


CRAFTED = {
    "dotdot": [tar_member("../evil.txt")],
    "nested_dotdot": [tar_member("exp/../../evil.txt")],
    "absolute": [tar_member("/tmp/evil.txt")],
    "symlink_out": [tar_member("exp/link", tarfile.SYMTYPE, "../../etc/passwd")],
    "symlink_absolute": [tar_member("link", tarfile.SYMTYPE, "/etc/passwd")],
    "hardlink_out": [tar_member("hard", tarfile.LNKTYPE, "../outside")],
    "device": [tar_member("dev", tarfile.CHRTYPE)],
    "fifo": [tar_member("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_tar_is_rejected_and_nothing_is_written(case: str, tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    archive = make_tar(work / f"{case}.tar.gz", CRAFTED[case])
    target = work / "out"
    before = snapshot(tmp_path.parent)
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, target)
    assert not target.exists()
    assert snapshot(tmp_path.parent) == before


def test_crafted_archive_refused_by_from_pretrained(tmp_path: Path):
    archive = make_tar(tmp_path / "model.tar.gz", CRAFTED["dotdot"])
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.' component"):
        InferenceSession.from_pretrained(str(archive), downloader_kwargs={"cachedir": cache})
    assert not (tmp_path / "evil.txt").exists()
    assert not any(cache.rglob("*.txt"))


def test_huge_declared_size_is_rejected(tmp_path: Path):
    archive = make_tar(tmp_path / "big.tar.gz", [tar_member("exp/model.pth")], payload=b"x" * 4096)
    with pytest.raises(UnsafeArchiveError, match="more than 1000 bytes"):
        check_archive(archive, ArchiveLimits(max_total_bytes=1000))
    with pytest.raises(UnsafeArchiveError, match="more than 1 members"):
        check_archive(archive, ArchiveLimits(max_members=1))


def test_zip_symlink_and_dotdot_are_rejected(tmp_path: Path):
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as archive:
        info = zipfile.ZipInfo("exp/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "../../../etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        check_archive(link)
    dotdot = tmp_path / "dotdot.zip"
    with zipfile.ZipFile(dotdot, "w") as archive:
        archive.writestr("../evil.txt", "x")
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.'"):
        check_archive(dotdot)


def test_not_an_archive(tmp_path: Path):
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"plain bytes")
    with pytest.raises(UnsafeArchiveError, match="not a tar or zip"):
        check_archive(path)


def test_internal_links_and_real_bundles_pass(tmp_path: Path, tiny_archive: Path):
    archive = make_tar(
        tmp_path / "ok.tar.gz",
        [tar_member("exp/model.pth"), tar_member("exp/alias.pth", tarfile.SYMTYPE, "model.pth")],
    )
    assert "exp/alias.pth" in check_archive(archive)
    names = check_archive(tiny_archive)
    assert names[0] == "meta.yaml" and "conf/inference.yaml" in names
    out = safe_extract(tiny_archive, tmp_path / "bundle")
    assert (out / "exp" / "asr" / "model.pth").is_file()
