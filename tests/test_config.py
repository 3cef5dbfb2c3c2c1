"""Inference-config loading: defaults lists, resolvers, recipe_dir binding, device choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from espnet_serve.bundle.config import load_inference_config, resolve_device
from espnet_serve.bundle.errors import InferenceConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_list_merges_in_order_with_self_last(tmp_path: Path):
    write(tmp_path / "conf/decode/beam4.yaml", "model:\n  beam_size: 4\n  ctc_weight: 0.3\n")
    write(tmp_path / "conf/base.yaml", "input_key: speech\nmodel:\n  _target_: a.B\n")
    config_path = write(
        tmp_path / "conf/inference.yaml",
        "defaults:\n  - base\n  - decode: beam4\nmodel:\n  ctc_weight: 0.5\n",
    )
    config = load_inference_config(config_path, bundle_root=None)
    assert config.model == {"_target_": "a.B", "beam_size": 4, "ctc_weight": 0.5}
    assert config.input_key == "speech"
    assert "defaults" not in config


def test_self_first_lets_defaults_override(tmp_path: Path):
    write(tmp_path / "over.yaml", "model:\n  beam_size: 8\n")
    config_path = write(
        tmp_path / "inference.yaml", "defaults: [_self_, over]\nmodel:\n  beam_size: 1\n"
    )
    assert load_inference_config(config_path, bundle_root=None).model.beam_size == 8


def test_recipe_dir_is_bound_to_bundle_root_and_resolvers_work(tmp_path: Path):
    write(tmp_path / "bundle/data/tokens.txt", "a\nb\n\nc\n")
    write(tmp_path / "bundle/data/extra.yaml", "lr: 0.1\n")
    config_path = write(
        tmp_path / "bundle/conf/inference.yaml",
        "recipe_dir: .\n"
        "model:\n"
        "  _target_: a.B\n"
        "  asr_model_file: ${recipe_dir}/exp/model.pth\n"
        "  tokens: ${load_line:${recipe_dir}/data/tokens.txt}\n"
        "  extra: ${load_yaml:${recipe_dir}/data/extra.yaml}\n",
    )
    config = load_inference_config(config_path, bundle_root=tmp_path / "bundle")
    assert config.recipe_dir == str(tmp_path / "bundle")
    assert config.model.asr_model_file == f"{tmp_path}/bundle/exp/model.pth"
    assert list(config.model.tokens) == ["a", "b", "c"]
    assert config.model.extra.lr == 0.1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: [{a: b, c: d}]\n", "unsupported defaults entry"),
        ("defaults: base\n", "'defaults' must be a list"),
        ("- a\n- b\n", "must hold a mapping"),
    ],
)
def test_malformed_configs(tmp_path: Path, text: str, message: str):
    config_path = write(tmp_path / "inference.yaml", text)
    with pytest.raises(InferenceConfigError, match=message):
        load_inference_config(config_path, bundle_root=None)


def test_missing_defaults_file(tmp_path: Path):
    config_path = write(tmp_path / "inference.yaml", "defaults: [nowhere]\n")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml"):
        load_inference_config(config_path, bundle_root=None)


def test_resolve_device():
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"  # no CUDA on CI machines
    assert resolve_device(None) == "cpu"
