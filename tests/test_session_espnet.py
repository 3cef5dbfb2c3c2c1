"""InferenceSession on a real (random-initialised) espnet2 ASR model.

Covers the offline download routes (espnet_model_zoo's ModelDownloader on a
local archive and on a pre-filled Hugging Face cache), bundled user code under
trust, and the real Speech2Text per-sample fallback.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.bin.asr_inference import Speech2Text

from espnet_serve import InferenceSession
from espnet_serve.bundle.errors import (
    BackendResolutionError,
    BundleMetadataError,
    UntrustedUserCodeError,
    UserCodePathError,
)
from tests.store_helpers import copy_bundle, hf_cache_from_bundle


def assert_user_code_result(result: dict, uttid: object) -> None:
    assert result["made_by"] == "bundled-user-code"
    assert result["uttid"] == uttid
    assert isinstance(result["text"], str)


@pytest.mark.parametrize("archive_fixture", ["tiny_archive", "espnet2_packed_archive"])
def test_from_pretrained_local_archive_offline(archive_fixture, request, tmp_path, speech):
    archive = request.getfixturevalue(archive_fixture)
    session = InferenceSession.from_pretrained(
        str(archive), trust_user_code=True, downloader_kwargs={"cachedir": tmp_path}
    )
    assert isinstance(session.model, Speech2Text)
    assert isinstance(session.get_model(), ESPnetASRModel)
    assert session.primary_input_key == "speech"
    assert session.bundle_root is not None and session.bundle_root.is_relative_to(tmp_path)
    assert (session.bundle_root / "src" / "output.py").is_file()
    assert_user_code_result(session(speech, idx="utt-1"), "utt-1")

    # The output equals Speech2Text's own best hypothesis.
    direct = session.model(speech)
    assert session(speech)["text"] == direct[0][0]


def test_from_pretrained_refuses_untrusted_user_code(tiny_archive, tmp_path):
    with pytest.raises(UntrustedUserCodeError, match="trust_user_code=True"):
        InferenceSession.from_pretrained(
            str(tiny_archive), downloader_kwargs={"cachedir": tmp_path}
        )
    with pytest.raises(ValueError, match="trust_user_code=True"):
        InferenceSession.from_pretrained(
            str(tiny_archive), enable_user_code=True, downloader_kwargs={"cachedir": tmp_path}
        )


def test_backend_kwargs_replace_the_config_model_options(tiny_bundle_dir):
    session = InferenceSession.from_pretrained(
        str(tiny_bundle_dir), trust_user_code=True, beam_size=3, nbest=2
    )
    assert isinstance(session.model, Speech2Text)
    assert session.model.nbest == 2
    assert session.model.beam_search.beam_size == 3


def test_batched_backend_swaps_speech2text_for_its_batched_equivalent(tiny_bundle_dir, speech):
    from espnet_serve.backends import BatchedSpeech2Text

    plain = InferenceSession.from_pretrained(str(tiny_bundle_dir), trust_user_code=True)
    batched = InferenceSession.from_pretrained(
        str(tiny_bundle_dir), trust_user_code=True, batched_backend=True, prefer_model_batch=True
    )
    assert isinstance(batched.model, BatchedSpeech2Text)
    assert batched.model.options.beam_size == plain.model.beam_search.beam_size
    clips = [speech, speech[: len(speech) // 2]]
    assert batched.forward_batch(clips) == plain.forward_batch(clips)


def test_from_pretrained_unpacked_directory(tiny_bundle_dir, speech):
    session = InferenceSession.from_pretrained(str(tiny_bundle_dir), trust_user_code=True)
    assert session.bundle_root == tiny_bundle_dir
    assert_user_code_result(session(speech), 0)


def test_from_pretrained_hugging_face_cache_offline(tiny_bundle_dir, tmp_path, speech, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = hf_cache_from_bundle(tiny_bundle_dir, tmp_path, "espnet/tiny_digits")
    assert (snapshot / "meta.yaml").is_symlink()
    session = InferenceSession.from_pretrained(
        "espnet/tiny_digits", trust_user_code=True, downloader_kwargs={"cachedir": tmp_path}
    )
    # absolute(), not resolve(): the root is the snapshot, not blobs/.
    assert session.bundle_root == snapshot
    assert_user_code_result(session(speech, idx=3), 3)


def test_from_artifacts_with_backend_class(tiny_experiment, speech):
    session = InferenceSession.from_artifacts(
        {
            "asr_train_config": str(tiny_experiment.asr_train_config),
            "asr_model_file": str(tiny_experiment.asr_model_file),
        },
        backend_class="espnet2.bin.asr_inference.Speech2Text",
        beam_size=1,
        maxlenratio=0.2,
    )
    assert isinstance(session.model, Speech2Text)
    assert session.output_fn is None
    assert isinstance(session(speech)[0][0], str)


def test_from_artifacts_without_config_or_backend_class(tiny_experiment):
    with pytest.raises(BackendResolutionError, match="Pass backend_class="):
        InferenceSession.from_artifacts({"asr_train_config": str(tiny_experiment.asr_train_config)})
    with pytest.raises(RuntimeError):
        InferenceSession.from_artifacts({"asr_model_file": str(tiny_experiment.asr_model_file)})


def test_from_artifacts_missing_file_names_path(tiny_bundle_dir, tmp_path):
    missing = tmp_path / "nope" / "model.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        InferenceSession.from_artifacts({"asr_model_file": str(missing)}, backend_class=Speech2Text)


def _copy_bundle(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("meta_text", "problem"),
    [
        ("files: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("files: 3\n", "files"),
        ("user_code_paths: {a: 1}\n", "user_code_paths"),
    ],
)
def test_malformed_meta_yaml(tiny_bundle_dir, tmp_path, meta_text, problem):
    bundle = _copy_bundle(tiny_bundle_dir, tmp_path / "bundle")
    (bundle / "meta.yaml").write_text(meta_text)
    with pytest.raises(BundleMetadataError, match=problem):
        InferenceSession.from_artifacts(
            {"asr_model_file": str(bundle / "exp/asr/model.pth")}, trust_user_code=True
        )


def test_user_code_path_outside_bundle_is_refused(tiny_bundle_dir, tmp_path):
    bundle = _copy_bundle(tiny_bundle_dir, tmp_path / "bundle")
    with pytest.raises(UserCodePathError, match="outside the bundle root"):
        InferenceSession.from_pretrained(
            str(bundle), trust_user_code=True, user_code_paths=["../elsewhere"]
        )
    with pytest.raises(UserCodePathError, match="outside the bundle root"):
        InferenceSession.from_pretrained(
            str(bundle), enable_user_code=True, trust_user_code=True, user_code_paths=["/tmp"]
        )


def test_meta_user_code_paths_and_stale_modules_are_replaced(tiny_bundle_dir, tmp_path, speech):
    """A second bundle's recipe code replaces the first one's same-named modules."""
    first = InferenceSession.from_pretrained(str(tiny_bundle_dir), trust_user_code=True)
    bundle = _copy_bundle(tiny_bundle_dir, tmp_path / "bundle")
    shutil.move(bundle / "src", bundle / "recipe_code")
    (bundle / "recipe_code" / "output.py").write_text(
        "def output_fn(*, data, model_output, idx):\n    return 'second bundle'\n"
    )
    meta = (bundle / "meta.yaml").read_text().replace("- src", "- recipe_code")
    (bundle / "meta.yaml").write_text(meta)
    config = bundle / "conf" / "inference.yaml"
    config.write_text(config.read_text().replace("src.output", "recipe_code.output"))
    with pytest.raises(UntrustedUserCodeError):
        InferenceSession.from_pretrained(str(bundle))
    second = InferenceSession.from_pretrained(str(bundle), trust_user_code=True)
    assert second(speech) == "second bundle"
    assert str(bundle / "recipe_code") in sys.path
    assert first(speech)["made_by"] == "bundled-user-code"


def test_real_speech2text_rejects_lists_and_falls_back(tiny_archive, tmp_path):
    session = InferenceSession.from_pretrained(
        str(tiny_archive),
        trust_user_code=True,
        prefer_model_batch=True,
        downloader_kwargs={"cachedir": tmp_path},
    )
    rng = np.random.default_rng(1)
    clips = [(rng.standard_normal(n) * 0.05).astype(np.float32) for n in (4000, 9000, 6000)]
    batched = session.forward_batch(clips, indices=["a", "b", "c"])
    single = [session(clip, idx=i) for clip, i in zip(clips, ["a", "b", "c"], strict=True)]
    assert batched == single
    with pytest.raises(RuntimeError, match="Batched inference failed"):
        session.forward_batch(clips, fallback_to_single_on_error=False)


def test_from_config_with_recipe_dir_needs_trust_for_user_code(tiny_bundle_dir, speech):
    config = {
        "recipe_dir": str(tiny_bundle_dir),
        "output_fn": "src.output.output_fn",
        "model": {
            "_target_": "espnet2.bin.asr_inference.Speech2Text",
            "asr_train_config": f"{tiny_bundle_dir}/exp/asr/config.yaml",
            "asr_model_file": f"{tiny_bundle_dir}/exp/asr/model.pth",
            "beam_size": 1,
            "maxlenratio": 0.2,
        },
    }
    with pytest.raises(UntrustedUserCodeError):
        InferenceSession.from_config(config)
    session = InferenceSession.from_config(config, trust_user_code=True)
    assert session.model.device == "cpu"
    assert_user_code_result(session(speech, idx=5), 5)


def test_from_config_user_code_without_recipe_dir():
    with pytest.raises(RuntimeError, match="recipe_dir"):
        InferenceSession.from_config(
            {"output_fn": "src.output.output_fn", "model": {"_target_": "x.Y"}},
            trust_user_code=True,
        )


def test_a_backend_class_in_bundle_code_is_not_imported_without_trust(tiny_bundle_dir, tmp_path):
    from espnet_serve.bundle.layout import artifacts_from_directory

    bundle = copy_bundle(tiny_bundle_dir, tmp_path / "bundle")
    (bundle / "src" / "backend.py").write_text("raise SystemExit('imported!')\n")
    with pytest.raises(UntrustedUserCodeError):
        InferenceSession.from_artifacts(
            artifacts_from_directory(bundle), backend_class="src.backend.Backend"
        )
    assert "src.backend" not in sys.modules


def test_from_pretrained_unpacks_a_local_archive_once_through_the_safe_path(
    espnet2_packed_archive, tmp_path, speech
):
    from espnet_serve.bundle.sources import UNPACKED_MARKER

    load = {"trust_user_code": True, "downloader_kwargs": {"cachedir": tmp_path}}
    first = InferenceSession.from_pretrained(str(espnet2_packed_archive), **load)
    (unpacked,) = [path for path in tmp_path.iterdir() if not path.name.startswith(".")]
    assert (unpacked / UNPACKED_MARKER).is_file()
    assert first.bundle_root == unpacked
    again = InferenceSession.from_pretrained(str(espnet2_packed_archive), **load)
    assert again.bundle_root == unpacked and again(speech) == first(speech)


def test_unpacking_rebinds_config_paths_as_espnet2_does(tmp_path):
    import tarfile

    import yaml

    from espnet_serve.bundle.errors import BundleMetadataError
    from espnet_serve.bundle.sources import unpack_bundle_archive

    def packed(name: str, meta: dict) -> Path:
        src = tmp_path / name
        (src / "exp").mkdir(parents=True)
        (src / "exp" / "stats.npz").write_bytes(b"stats")
        (src / "exp" / "config.yaml").write_text(yaml.safe_dump({"stats": "exp/stats.npz", "n": 3}))
        (src / "meta.yaml").write_text(yaml.safe_dump(meta))
        archive = tmp_path / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(src.rglob("*")):
                tar.add(path, arcname=path.relative_to(src).as_posix(), recursive=False)
        return archive

    good = {"files": {"stats_file": "exp/stats.npz"}, "yaml_files": {"cfg": "exp/config.yaml"}}
    artifacts = unpack_bundle_archive(packed("good", good), tmp_path / "cache")
    config = yaml.safe_load(Path(artifacts["cfg"]).read_text())
    assert config == {"stats": artifacts["stats_file"], "n": 3}
    assert Path(artifacts["stats_file"]).read_bytes() == b"stats"
    outside = {"files": {}, "yaml_files": {"cfg": "../../escape.yaml"}}
    with pytest.raises(BundleMetadataError, match="outside"):
        unpack_bundle_archive(packed("bad", outside), tmp_path / "cache")
    assert not (tmp_path / "escape.yaml").exists()
