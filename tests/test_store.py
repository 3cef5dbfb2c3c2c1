"""Bundles in the BentoML model store: safe, relocatable import and verified load."""

from __future__ import annotations

import shutil
from pathlib import Path

import bentoml
import pytest
import yaml

from devkit.publish import pack_bundle, write_bundle
from espnet_serve.bundle import store
from espnet_serve.bundle.errors import (
    BundleIntegrityError,
    BundleMetadataError,
    UnsafeArchiveError,
    UntrustedUserCodeError,
)
from espnet_serve.bundle.sources import file_sha256
from espnet_serve.bundle.spec import STORE_FORMAT
from tests.conftest import TINY_DECODING
from tests.store_helpers import (
    CRAFTED_CASES,
    copy_bundle,
    hf_cache_from_bundle,
    read_yaml,
    stage_crafted_archive,
    stored_spec,
    tree,
    with_token_list_file,
    write_yaml,
    yaml_strings,
)

pytest_plugins = ["tests.bentoml_fixtures"]


def bundle_files(model: bentoml.Model) -> set[str]:
    root = Path(model.path) / store.BUNDLE_DIRNAME
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def stored_yaml(model: bentoml.Model, relpath: str) -> object:
    return read_yaml(Path(model.path) / store.BUNDLE_DIRNAME / relpath)


def text_of(output: object) -> str:
    assert isinstance(output, dict), output
    return str(output["text"])


# ----------------------------------------------------------------------- import


def test_trusted_archive_lands_in_the_store_with_digests_and_labels(
    bentoml_home: Path, tiny_archive: Path
):
    model = store.import_bundle(tiny_archive, trust_user_code=True)

    assert model.tag.name == "tiny"
    assert Path(model.path).is_relative_to(bentoml_home)
    assert bundle_files(model) == {
        "meta.yaml",
        "conf/inference.yaml",
        "exp/asr/config.yaml",
        "exp/asr/model.pth",
        "src/__init__.py",
        "src/output.py",
    }
    metadata = model.info.metadata
    bundle = Path(model.path) / store.BUNDLE_DIRNAME
    assert metadata["files"] == {rel: file_sha256(bundle / rel) for rel in bundle_files(model)}
    assert metadata["input_key"] == "speech"
    assert metadata["sample_rate"] == 16000
    assert metadata["user_code_trusted"] is True
    assert metadata["source_sha256"] == file_sha256(tiny_archive)
    assert metadata["bind_yaml_files"] == ["exp/asr/config.yaml"]
    assert metadata["family"] == "asr"
    assert metadata["inference_class"] == "espnet2.bin.asr_inference.Speech2Text"
    assert metadata["weights_file"] == "exp/asr/model.pth"
    assert store.stored_spec(model).weights_sha256 == metadata["files"]["exp/asr/model.pth"]
    labels = model.info.labels
    assert labels["task"] == "asr"
    assert labels["family"] == "asr"
    assert labels["source"] == "tiny"
    assert labels["source_kind"] == "archive"
    assert labels["user_code"] == "trusted"
    assert labels["espnet_version"]


def test_stored_session_runs_user_code_from_any_directory(
    bentoml_home: Path, tiny_archive: Path, tmp_path: Path, monkeypatch, speech
):
    tag = store.import_bundle(tiny_archive, name="my-model", trust_user_code=True).tag
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    session = store.load_session(str(tag))

    assert session.bundle_root is not None
    assert not session.bundle_root.is_relative_to(bentoml_home)  # a scratch view
    output = session(speech)
    assert output["made_by"] == "bundled-user-code"
    assert isinstance(output["text"], str)


def test_load_session_accepts_a_bento_model_reference(bentoml_home: Path, tiny_archive: Path):
    tag = store.import_bundle(tiny_archive, trust_user_code=True).tag
    session = store.load_session(bentoml.models.BentoModel(tag), prefer_model_batch=True)
    assert session.prefer_model_batch is True


def test_trust_cannot_be_changed_at_load(bentoml_home: Path, tiny_archive: Path):
    tag = store.import_bundle(tiny_archive, trust_user_code=True).tag
    with pytest.raises(TypeError, match="recorded"):
        store.load_session(tag, trust_user_code=False)


def test_untrusted_user_code_is_refused_and_nothing_is_stored(
    bentoml_home: Path, tiny_archive: Path
):
    with pytest.raises(UntrustedUserCodeError, match="--trust-user-code"):
        store.import_bundle(tiny_archive)
    assert bentoml.models.list() == []


def test_unreferenced_user_code_is_left_out_without_trust(
    bentoml_home: Path, tiny_experiment, user_code_dir: Path, tmp_path: Path, speech
):
    bundle = write_bundle(
        tmp_path / "bundle",
        asr_train_config=tiny_experiment.asr_train_config,
        asr_model_file=tiny_experiment.asr_model_file,
        decoding=TINY_DECODING,
        user_code_dir=user_code_dir,
    )
    model = store.import_bundle(bundle)

    assert not any(rel.startswith("src/") for rel in bundle_files(model))
    assert model.info.labels["user_code"] == "none"
    assert model.info.metadata["user_code_trusted"] is False
    assert isinstance(store.load_session(model)(speech), list)  # Speech2Text's n-best


def test_stored_yaml_holds_no_path_into_the_source(bentoml_home: Path, tiny_bundle_dir: Path):
    model = store.import_bundle(tiny_bundle_dir, trust_user_code=True)
    for relpath in ("conf/inference.yaml", "exp/asr/config.yaml"):
        strings = yaml_strings(stored_yaml(model, relpath))
        assert not [s for s in strings if str(tiny_bundle_dir) in s], relpath


def test_downloader_cache_paths_are_made_relocatable(
    bentoml_home: Path, tiny_bundle_dir: Path, tmp_path: Path, speech
):
    """espnet_model_zoo's unpack writes absolute cache paths: the stored bundle needs none."""
    from espnet_model_zoo.downloader import ModelDownloader

    source = with_token_list_file(copy_bundle(tiny_bundle_dir, tmp_path / "src_bundle"))
    archive = pack_bundle(source, tmp_path / "archives" / "tokens.tar.gz")
    cachedir = tmp_path / "zoo_cache"
    artifacts = ModelDownloader(cachedir).download_and_unpack(str(archive))
    unpacked = Path(artifacts["asr_train_config"]).parents[2]
    assert read_yaml(unpacked / "exp/asr/config.yaml")["token_list"].startswith(str(cachedir))

    model = store.import_bundle(unpacked, trust_user_code=True)
    shutil.rmtree(cachedir)

    assert "data/tokens.txt" in bundle_files(model)  # referenced by the config, not meta.yaml
    assert stored_yaml(model, "exp/asr/config.yaml")["token_list"] == "data/tokens.txt"
    inference = stored_yaml(model, "conf/inference.yaml")
    assert inference["model"]["asr_train_config"] == "${recipe_dir}/exp/asr/config.yaml"
    session = store.load_session(model)
    assert session.get_model().token_list[:3] == ["<blank>", "<unk>", "a"]
    assert isinstance(text_of(session(speech)), str)


def test_a_recipe_bundle_packed_by_espnet2_with_global_mvn_is_served_as_espnet2_decodes_it(
    bentoml_home: Path, tmp_path: Path, monkeypatch
):
    """As a recipe publishes: global_mvn with its stats file (a path relative to the recipe
    folder), packed by espnet2's own pack(), no inference config. Imported, the batched backend
    answers as Speech2Text does in the unpacked folder."""
    import zipfile

    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.main_funcs.pack_funcs import pack

    from devkit.random_init import write_feats_stats, write_random_asr_experiment
    from espnet_serve.assets import load_heldout
    from espnet_serve.backends import BatchedSpeech2Text

    recipe = tmp_path / "egs2" / "tiny" / "asr1"
    stats = Path("exp/asr_stats_raw_char/train/feats_stats.npz")
    recipe.mkdir(parents=True)
    monkeypatch.chdir(recipe)
    write_feats_stats(stats)
    experiment = write_random_asr_experiment(
        Path("exp/asr_train_char"), global_mvn_stats=str(stats)
    )
    archive = tmp_path / "published.zip"
    pack(
        files={"asr_model_file": str(experiment.asr_model_file)},
        yaml_files={"asr_train_config": str(experiment.asr_train_config)},
        option=[str(stats)],
        outpath=archive,
    )
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(archive).extractall(unpacked)
    monkeypatch.chdir(unpacked)
    reference = Speech2Text(str(experiment.asr_train_config), str(experiment.asr_model_file))
    monkeypatch.chdir(tmp_path)

    model = store.import_bundle(archive)
    session = store.load_session(model, batched_backend=True, prefer_model_batch=True)

    assert isinstance(session.model, BatchedSpeech2Text)
    assert type(session.model.asr_model.normalize).__name__ == "GlobalMVN"
    clips = [clip.read_audio(16000) for clip in load_heldout(4)]
    assert [nbest[0][2] for nbest in session.forward_batch(clips)] == [
        reference(clip)[0][2] for clip in clips
    ]


def test_offline_hugging_face_snapshot_is_imported(
    bentoml_home: Path, tiny_bundle_dir: Path, tmp_path: Path, monkeypatch, speech
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cachedir = tmp_path / "hf_cache"
    hf_cache_from_bundle(tiny_bundle_dir, cachedir, "espnet/tiny-digits")

    model = store.import_bundle("espnet/tiny-digits", cachedir=cachedir, trust_user_code=True)

    assert model.tag.name == "espnet-tiny-digits"
    assert model.info.labels["source"] == "espnet/tiny-digits"
    assert model.info.labels["source_kind"] == "tag"
    assert "meta.yaml" in bundle_files(model)
    train_config = stored_yaml(model, "exp/asr/config.yaml")
    assert not any(str(cachedir) in s for s in yaml_strings(train_config))
    shutil.rmtree(cachedir)
    assert text_of(store.load_session(model)(speech)) is not None


def test_bundle_without_inference_config_gets_a_speech2text_one(
    bentoml_home: Path, tiny_experiment, tmp_path: Path, speech
):
    bundle = tmp_path / "plain"
    (bundle / "exp").mkdir(parents=True)
    shutil.copyfile(tiny_experiment.asr_train_config, bundle / "exp" / "config.yaml")
    shutil.copyfile(tiny_experiment.asr_model_file, bundle / "exp" / "model.pth")
    write_yaml(
        bundle / "meta.yaml",
        {
            "files": {"asr_model_file": "exp/model.pth"},
            "yaml_files": {"asr_train_config": "exp/config.yaml"},
        },
    )
    model = store.import_bundle(bundle)

    inference = stored_yaml(model, "conf/inference.yaml")
    assert inference["model"]["_target_"] == "espnet2.bin.asr_inference.Speech2Text"
    assert inference["model"]["asr_model_file"] == "${recipe_dir}/exp/model.pth"
    assert stored_yaml(model, "meta.yaml")["yaml_files"]["inference_config"] == (
        "conf/inference.yaml"
    )
    session = store.load_session(model, beam_size=1, maxlenratio=0.2)
    assert isinstance(session(speech), list)


def test_meta_yaml_pointing_outside_the_bundle_is_refused(
    bentoml_home: Path, tiny_bundle_dir: Path, tmp_path: Path
):
    bundle = copy_bundle(tiny_bundle_dir, tmp_path / "bundle")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a model file")
    meta = read_yaml(bundle / "meta.yaml")
    meta["files"]["asr_model_file"] = "../secret.txt"
    write_yaml(bundle / "meta.yaml", meta)

    with pytest.raises(BundleMetadataError, match="not a relative path inside the bundle"):
        store.import_bundle(bundle, trust_user_code=True)


@pytest.mark.parametrize("case", CRAFTED_CASES)
def test_crafted_archive_is_refused_and_nothing_lands_outside(
    case: str, bentoml_home: Path, tmp_path: Path
):
    archive, outside = stage_crafted_archive(tmp_path, case)
    before = tree(tmp_path.parent)

    expected = BundleMetadataError if case == "no_meta" else UnsafeArchiveError
    with pytest.raises(expected) as caught:
        store.import_bundle(archive, trust_user_code=True)

    assert str(archive) in str(caught.value) or "meta.yaml" in str(caught.value)
    assert tree(tmp_path.parent) == before
    assert not outside.exists()
    assert bentoml.models.list() == []


# ------------------------------------------------------------------- integrity


@pytest.mark.parametrize("change", ["edit", "add", "remove", "symlink"])
def test_changed_store_files_are_refused_at_load(
    change: str, bentoml_home: Path, tiny_archive: Path
):
    model = store.import_bundle(tiny_archive, trust_user_code=True)
    bundle = Path(model.path) / store.BUNDLE_DIRNAME
    weights = bundle / "exp" / "asr" / "model.pth"
    if change == "edit":
        with weights.open("r+b") as stream:
            stream.seek(100)
            stream.write(b"\x00\x01\x02")
    elif change == "add":
        (bundle / "src" / "sitecustomize.py").write_text("print('hi')\n")
    elif change == "remove":
        (bundle / "src" / "output.py").unlink()
    else:
        copy = bundle.parent / "model.pth"
        shutil.copyfile(weights, copy)
        weights.unlink()
        weights.symlink_to(copy)

    with pytest.raises(BundleIntegrityError, match=str(model.tag)) as caught:
        store.load_session(model.tag)
    assert "re-import" in str(caught.value)


def test_a_model_not_imported_by_espnet_serve_is_refused(bentoml_home: Path):
    with bentoml.models.create("foreign", metadata={"note": "no digests"}) as foreign:
        (Path(foreign.path) / "weights.bin").write_bytes(b"x")
    with pytest.raises(BundleIntegrityError, match="not imported by this version of espnet-serve"):
        store.load_session("foreign:latest")


def test_a_model_of_an_older_store_format_is_refused_with_how_to_fix(
    bentoml_home: Path, tiny_archive: Path
):
    model = store.import_bundle(tiny_archive, trust_user_code=True)
    spec = store.stored_spec(model)
    assert spec.format == STORE_FORMAT and spec.family == "asr"
    model.info.metadata["format"] = STORE_FORMAT - 1
    with pytest.raises(
        BundleIntegrityError, match=r"store format 1, expected 2.*espnet-serve build"
    ):
        store.stored_spec(model)


# ----------------------------------------------------------------- default model


def test_ensure_default_model_imports_once_per_archive(
    bentoml_home: Path, tiny_archive: Path, tmp_path: Path
):
    archive = tmp_path / "digits.tar.gz"
    shutil.copyfile(tiny_archive, archive)

    first = store.ensure_default_model(archive)
    again = store.ensure_default_model(archive)
    assert first == again
    assert first.name == store.DEFAULT_MODEL_NAME
    model = bentoml.models.get(first)
    assert model.info.metadata["user_code_trusted"] is True

    with archive.open("ab") as stream:  # a different archive: a new version
        stream.write(b"\0" * 1024)
    updated = store.ensure_default_model(archive)
    assert updated != first
    assert bentoml.models.get(f"{store.DEFAULT_MODEL_NAME}:latest").tag == updated


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("espnet/digits", "espnet-digits"),
        ("Tiny_Model.v2", "tiny_model.v2"),
        ("---", "espnet-model"),
    ],
)
def test_model_names_are_valid_bentoml_names(source: str, name: str):
    assert store.model_name_for(source) == name
    bentoml.Tag(store.model_name_for(source))


def test_digests_are_persisted_in_model_yaml(bentoml_home: Path, tiny_archive: Path):
    model = store.import_bundle(tiny_archive, trust_user_code=True)
    meta = yaml.safe_load((Path(model.path) / "model.yaml").read_text())
    assert meta["metadata"]["files"] == model.info.metadata["files"]
    assert all(len(digest) == 64 for digest in meta["metadata"]["files"].values())


def test_an_invalid_model_name_fails_before_any_work(bentoml_home: Path, tiny_archive: Path):
    with pytest.raises(ValueError, match="not a valid BentoML tag"):
        store.import_bundle(tiny_archive, name="not a name!", trust_user_code=True)
    assert bentoml.models.list() == []


def test_eval_and_bench_stage_the_bundle_the_store_holds(
    bentoml_home: Path, tiny_archive: Path, tmp_path: Path, speech
):
    stored = store.import_bundle(tiny_archive, trust_user_code=True)
    spec, _ = store.stage_bundle(tiny_archive, tmp_path / "staged", trust_user_code=True)
    assert spec == stored_spec(stored.tag)
    assert bundle_files(stored) == set(spec.files)
    staged = store.session_from_bundle(tmp_path / "staged", spec)(speech)
    assert staged == store.load_session(stored.tag)(speech)


def test_languages_come_from_meta_yaml_or_the_import(
    bentoml_home: Path, tiny_bundle_dir: Path, tmp_path: Path
):
    bundle = copy_bundle(tiny_bundle_dir, tmp_path / "bundle")
    meta = read_yaml(bundle / "meta.yaml")
    write_yaml(bundle / "meta.yaml", {**meta, "language": "EN"})
    assert store.import_bundle(bundle, trust_user_code=True).info.metadata["languages"] == ["en"]
    chosen = store.import_bundle(bundle, trust_user_code=True, languages=["de", "fr"])
    assert stored_spec(chosen.tag).languages == ["de", "fr"]
