"""Pytest plugin of the model-store tests: an isolated BentoML home (``bentoml_home``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture()
def bentoml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh ``BENTOML_HOME`` for this process and its subprocesses; scratch dirs under tmp."""
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = tmp_path / "bentoml"
    for sub in ("models", "bentos", "tmp"):
        (home / sub).mkdir(parents=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("BENTOML_HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # BentoML resolves its stores once per process: point them at the new home.
    with (
        BentoMLContainer.bentoml_home.patch(str(home)),
        BentoMLContainer.model_store.patch(ModelStore(home / "models")),
        BentoMLContainer.bento_store.patch(BentoStore(home / "bentos")),
        BentoMLContainer.tmp_bento_store_dir.patch(str(home / "tmp")),
    ):
        yield home
