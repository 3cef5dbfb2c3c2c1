"""docs/architecture.md matches the tree: every module it names exists, every module is named."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "src" / "espnet_serve"
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
NAMED = set(re.findall(r"`((?:[a-z0-9_]+/)*[a-z0-9_]+\.py)`", DOC))


def test_every_module_it_names_exists():
    missing = sorted(n for n in NAMED if not (PACKAGE / n).is_file() and not (REPO / n).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_and_folder_is_named():
    modules = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" or path.parent == PACKAGE
    }
    unnamed = sorted(modules - NAMED)
    assert not unnamed, f"modules docs/architecture.md does not name: {unnamed}"
    folders = {path.parent.relative_to(PACKAGE).parts[0] for path in PACKAGE.rglob("*/*.py")}
    assert {f for f in folders if f"`{f}/`" not in DOC and f != "assets"} == set()
