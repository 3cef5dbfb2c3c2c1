"""``espnet-serve build``: model store, Bento, and a built Bento served over HTTP."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bentoml
import httpx
import pytest
import soundfile as sf
import yaml

from devkit.publish import pack_bundle, write_bundle
from espnet_serve.bundle import store
from espnet_serve.cli import main as cli
from tests.answers import served_text
from tests.conftest import OUTPUT_FN_SOURCE, TINY_DECODING
from tests.server import BentoServer, start_server
from tests.store_helpers import CRAFTED_CASES, read_yaml, stage_crafted_archive, tree

pytest_plugins = ["tests.bentoml_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
BENTOFILE = REPO_ROOT / "bentofile.yaml"


def printed(capsys: pytest.CaptureFixture[str], label: str) -> str:
    match = re.search(rf"^{label}: (\S+)$", capsys.readouterr().out, re.MULTILINE)
    assert match is not None, f"no '{label}:' line printed"
    return match.group(1)


def test_build_imports_a_trusted_archive(bentoml_home: Path, tiny_archive: Path, capsys):
    status = cli.main(["build", str(tiny_archive), "--trust-user-code", "--name", "tiny-cli"])

    assert status == 0
    tag = printed(capsys, "Model")
    assert tag.startswith("tiny-cli:")
    assert bentoml.models.get(tag).info.metadata["user_code_trusted"] is True


def test_build_refuses_untrusted_user_code(bentoml_home: Path, tiny_archive: Path, caplog):
    with caplog.at_level(logging.ERROR):
        status = cli.main(["build", str(tiny_archive)])

    assert status == 1
    assert "--trust-user-code" in caplog.text
    assert bentoml.models.list() == []


@pytest.mark.parametrize("case", CRAFTED_CASES)
def test_build_rejects_crafted_archives(case: str, bentoml_home: Path, tmp_path: Path, caplog):
    archive, outside = stage_crafted_archive(tmp_path, case)
    before = tree(tmp_path.parent)

    with caplog.at_level(logging.ERROR):
        status = cli.main(["build", str(archive), "--trust-user-code"])

    assert status == 1
    reason = {
        "dotdot": "'..' component",
        "absolute": "absolute path",
        "symlink_out": "symlink",
        "hardlink_out": "hard link",
        "huge": "unpacks to more than",
        "no_meta": "no meta.yaml",
    }[case]
    assert reason in caplog.text
    assert tree(tmp_path.parent) == before
    assert not outside.exists()
    assert bentoml.models.list() == []


def test_build_user_code_path_option(
    bentoml_home: Path, tiny_experiment, tmp_path: Path, capsys, speech
):
    code = tmp_path / "recipe" / "code"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("")
    (code / "output.py").write_text(OUTPUT_FN_SOURCE)
    bundle = write_bundle(
        tmp_path / "bundle",
        asr_train_config=tiny_experiment.asr_train_config,
        asr_model_file=tiny_experiment.asr_model_file,
        decoding=TINY_DECODING,
        output_fn="code.output.output_fn",
        extra_meta={"user_code_paths": ["src"]},
    )
    (bundle / "code").mkdir()
    for path in code.iterdir():
        (bundle / "code" / path.name).write_bytes(path.read_bytes())
    archive = pack_bundle(bundle, tmp_path / "code_bundle.tar.gz")

    assert cli.main(["build", str(archive), "--user-code-path", "code"]) == 1
    status = cli.main(
        ["build", str(archive), "--trust-user-code", "--user-code-path", "code", "--name", "coded"]
    )

    assert status == 0
    model = bentoml.models.get(printed(capsys, "Model"))
    stored_meta = read_yaml(Path(model.path) / store.BUNDLE_DIRNAME / "meta.yaml")
    assert stored_meta["user_code_paths"] == ["code"]
    assert "code/output.py" in model.info.metadata["files"]
    assert store.load_session(model)(speech)["made_by"] == "bundled-user-code"


@pytest.mark.slow
def test_build_bento_wires_the_exact_model_tag(
    bentoml_home: Path, tiny_archive: Path, capsys, monkeypatch
):
    monkeypatch.chdir(REPO_ROOT)
    status = cli.main(
        ["build", str(tiny_archive), "--trust-user-code", "--bento", "--bentofile", str(BENTOFILE)]
    )

    assert status == 0
    out = capsys.readouterr().out
    model_tag = re.search(r"^Model: (\S+)$", out, re.MULTILINE).group(1)
    bento_tag = re.search(r"^Bento: (\S+)$", out, re.MULTILINE).group(1)
    dockerfile = Path(re.search(r"^Dockerfile: (.+)$", out, re.MULTILINE).group(1))
    bento = bentoml.get(bento_tag)
    assert Path(bento.path).is_relative_to(bentoml_home)
    info = yaml.safe_load((Path(bento.path) / "bento.yaml").read_text())
    assert info["args"] == {"model_tag": model_tag}
    served = {m["tag"] for s in info["services"] for m in s["models"]}
    assert served == {model_tag}
    assert dockerfile == Path(bento.path) / "env" / "docker" / "Dockerfile"
    docker_text = dockerfile.read_text()
    assert "FROM nvidia/cuda:" in docker_text
    # uv is on PATH before BentoML's install step, which would otherwise need pip.
    assert docker_text.index("COPY --from=ghcr.io/astral-sh/uv:") < docker_text.index("uv venv")
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text()
    assert "espnet==202511" in requirements
    assert (Path(bento.path) / "src" / "espnet_serve" / "bundle" / "store.py").is_file()
    assert not (Path(bento.path) / "src" / "espnet_serve" / "assets").exists()


@pytest.mark.slow
@pytest.mark.parametrize("in_process", ["true", "false"])
def test_a_bento_packs_its_models_wherever_they_run(
    bentoml_home: Path, tiny_archive: Path, capsys, in_process: str
):
    # `bentoml build` run by hand decides where the models run as a server would (on a CPU
    # machine: in the API workers, which then hold the models); either way the Bento lists
    # them (what `bentoml containerize` and `export` pack).
    # Imported here: a logger created at collection is disabled by BentoML's logging setup,
    # which the chart tests run, and the caplog tests above would see nothing.
    from espnet_serve.cli.build import MODEL_TAG_ENV

    assert cli.main(["build", str(tiny_archive), "--trust-user-code"]) == 0
    model_tag = printed(capsys, "Model")
    env = {**os.environ, MODEL_TAG_ENV: model_tag, "ESPNET_SERVE_MODEL_IN_PROCESS": in_process}
    command = [sys.executable, "-m", "bentoml", "build", str(REPO_ROOT), "--output", "tag"]
    built = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    bento = bentoml.get(built.stdout.strip().split("__tag__:")[-1])
    info = yaml.safe_load((Path(bento.path) / "bento.yaml").read_text())
    services = {s["name"]: {m["tag"] for m in s["models"]} for s in info["services"]}
    assert set().union(*services.values()) == {model_tag}
    assert ("ModelService" in services) == (in_process == "false")


@pytest.mark.slow
def test_build_bento_serves_the_imported_model_and_the_stored_ones_named(
    bentoml_home: Path, tiny_archive: Path, capsys, monkeypatch
):
    monkeypatch.chdir(REPO_ROOT)
    voice = str(store.ensure_default_voice())
    status = cli.main(
        [
            *("build", str(tiny_archive), "--trust-user-code", "--bento"),
            *("--with-model", "espnet-digits-voice:latest", "--bentofile", str(BENTOFILE)),
        ]
    )

    assert status == 0
    out = capsys.readouterr().out
    model_tag = re.search(r"^Model: (\S+)$", out, re.MULTILINE).group(1)
    assert f"Models: {model_tag}, {voice}\n" in out
    bento = bentoml.get(re.search(r"^Bento: (\S+)$", out, re.MULTILINE).group(1))
    info = yaml.safe_load((Path(bento.path) / "bento.yaml").read_text())
    assert info["args"] == {"model_tag": f"{model_tag},{voice}"}
    models = {s["name"]: {m["tag"] for m in s["models"]} for s in info["services"]}
    assert models["ModelService"] == {model_tag} and models["ModelService2"] == {voice}
    refused = [str(tiny_archive), "--trust-user-code", "--bento", "--with-model", "nothing:v1"]
    assert cli.main(["build", *refused]) == 1


@contextmanager
def built_and_served(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[BentoServer]:
    """``espnet-serve build --bento`` an archive as the default model, then serve the Bento.

    The server runs from an unrelated directory, offline, on CPU: everything
    it needs comes from the Bento and the model store.
    """
    status = cli.main(
        [
            "build",
            str(archive),
            "--name",
            store.DEFAULT_MODEL_NAME,
            "--trust-user-code",
            "--bento",
            "--bentofile",
            str(BENTOFILE),
        ]
    )
    assert status == 0
    # BentoML's unix sockets live in TMPDIR: keep that path short (AF_UNIX limit).
    with tempfile.TemporaryDirectory(prefix="es-", dir="/tmp") as short_tmp:
        server = start_server(
            printed(capsys, "Bento"),
            env={"ESPNET_SERVE_GPU_COUNT": "0", "HF_HUB_OFFLINE": "1", "TMPDIR": short_tmp},
            log_path=tmp_path / "serve.log",
            cwd=tmp_path,
        )
        try:
            yield server
        finally:
            server.stop()


def post_audio(url: str, name: str, data: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        f"{url}/transcribe", files={"file": (name, data, content_type)}, timeout=120.0
    )


@pytest.mark.slow
def test_served_bento_answers_like_the_stored_session(
    bentoml_home: Path, tiny_archive: Path, tmp_path: Path, capsys, speech
):
    wav = io.BytesIO()
    sf.write(wav, speech, 16000, format="WAV", subtype="FLOAT")
    with built_and_served(tiny_archive, tmp_path, capsys) as server:
        response = post_audio(server.url, "noise.wav", wav.getvalue(), "audio/wav")

    assert response.status_code == 200, response.text
    expected = store.load_session(f"{store.DEFAULT_MODEL_NAME}:latest")(speech)["text"]
    assert response.json()["text"] == served_text(expected)  # the tiny model writes <sos/eos>


@pytest.mark.slow
def test_demo_archive_to_served_bento_transcribes_heldout_clips(
    bentoml_home: Path, tmp_path: Path, capsys
):
    from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE, load_heldout

    if not DEFAULT_MODEL_ARCHIVE.is_file():
        pytest.skip("the embedded default model is not built yet (recipes/digits)")
    with built_and_served(DEFAULT_MODEL_ARCHIVE, tmp_path, capsys) as server:
        for clip in load_heldout(3):
            response = post_audio(server.url, clip.path.name, clip.path.read_bytes(), "audio/flac")
            assert response.status_code == 200, response.text
            assert response.json()["text"] == clip.text
