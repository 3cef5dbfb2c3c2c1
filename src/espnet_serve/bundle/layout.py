"""Locate an unpacked model bundle and read its ``meta.yaml``.

A bundle is the directory a published model unpacks to: ``meta.yaml`` at its
root naming the artifact files, configs under ``conf/`` and optional recipe
code under ``src/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from espnet_serve.bundle.errors import BundleMetadataError

META_FILENAME = "meta.yaml"
DEFAULT_INFERENCE_CONFIG_KEY = "inference_config"
DEFAULT_INFERENCE_CONFIG_RELPATH = Path("conf") / "inference.yaml"
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_INPUT_KEY = "speech"
TRAIN_CONFIG_SUFFIX = "_train_config"
MODEL_FILE_SUFFIX = "_model_file"
# Train configs of auxiliary models (language models), not of the model that takes audio.
AUXILIARY_TASKS = ("lm",)


class BundleMetadata(BaseModel):
    """The fields of ``meta.yaml`` that espnet-serve reads; others are kept as extras.

    Attributes:
        files: Artifact key to bundle-relative path (model weights, ...).
        yaml_files: Artifact key to bundle-relative path of YAML configs.
        inference_config_key: Which artifact key is the inference config.
        user_code_paths: Bundle-relative import roots of recipe code.
        languages: ISO-639-1 codes of the languages the model transcribes (``language``
            with one code is accepted too).
        target_languages: ISO-639-1 codes of the languages a translation model writes.
        sample_rate: The model's sample rate, where its training config does not say it
            (enhancement configs do not: ``enh.sh --fs``).
    """

    model_config = ConfigDict(extra="allow")

    files: dict[str, str] = Field(default_factory=dict)
    yaml_files: dict[str, str] = Field(default_factory=dict)
    inference_config_key: str | None = None
    user_code_paths: list[str] | None = None
    languages: list[str] = Field(default_factory=list)
    target_languages: list[str] = Field(default_factory=list)
    sample_rate: int | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _language_as_languages(cls, values: Any) -> Any:
        if isinstance(values, dict) and "languages" not in values and "language" in values:
            language = values["language"]
            return {**values, "languages": [language] if isinstance(language, str) else language}
        return values

    @field_validator("languages", "target_languages", mode="after")
    @classmethod
    def _lower_case_codes(cls, value: list[str]) -> list[str]:
        return [str(code).strip().lower() for code in value]

    @field_validator("user_code_paths", mode="before")
    @classmethod
    def _single_path_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("files", "yaml_files", mode="before")
    @classmethod
    def _none_as_empty(cls, value: Any) -> Any:
        return {} if value is None else value


def _iter_paths(value: Any) -> Iterator[Path]:
    """Yield the path-like values of an artifact mapping entry."""
    if isinstance(value, str | os.PathLike):
        yield Path(value)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _iter_paths(item)


def artifact_paths(artifacts: Mapping[str, Any]) -> list[Path]:
    """Return every path named by an artifact mapping, in order."""
    return [path for value in artifacts.values() for path in _iter_paths(value)]


def find_bundle_root(artifacts: Mapping[str, Any]) -> Path | None:
    """Infer the bundle root from artifact paths.

    The root is the nearest parent of an artifact that holds ``meta.yaml``;
    without one, the common parent of all artifacts. Paths are made absolute,
    never resolved, so a Hugging Face snapshot (files symlinked into
    ``blobs/``) keeps its snapshot directory as the root.

    Args:
        artifacts: Artifact key to path mapping, as a model downloader returns it.

    Returns:
        Path | None: The bundle root, or ``None`` when no artifact is a path.
    """
    parents: list[Path] = []
    for path in artifact_paths(artifacts):
        absolute = path.expanduser().absolute()
        for parent in absolute.parents:
            if (parent / META_FILENAME).is_file():
                return parent
        parents.append(absolute.parent)
    if not parents:
        return None
    return Path(os.path.commonpath([p.as_posix() for p in parents]))


def load_bundle_metadata(bundle_root: Path | None) -> BundleMetadata:
    """Load and validate ``<bundle_root>/meta.yaml``.

    Args:
        bundle_root: The bundle root, or ``None``.

    Returns:
        BundleMetadata: The parsed metadata; empty when there is no ``meta.yaml``.

    Raises:
        BundleMetadataError: If the file is not valid YAML, not a mapping, or
            a known field has the wrong type.
    """
    if bundle_root is None or not (bundle_root / META_FILENAME).is_file():
        return BundleMetadata()
    meta_path = bundle_root / META_FILENAME
    try:
        loaded = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BundleMetadataError(f"{meta_path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return BundleMetadata()
    if not isinstance(loaded, dict):
        raise BundleMetadataError(
            f"{meta_path} must hold a mapping, found {type(loaded).__name__}."
        )
    try:
        return BundleMetadata.model_validate(loaded)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise BundleMetadataError(f"{meta_path} has invalid fields: {problems}") from exc


def artifacts_from_directory(bundle_root: Path) -> dict[str, str]:
    """Build the artifact mapping of an unpacked bundle directory from its ``meta.yaml``.

    Mirrors what ``espnet_model_zoo``'s downloader returns for an archive
    (``files`` and ``yaml_files`` keys, as absolute paths), for directories
    the downloader cannot take.

    Args:
        bundle_root: Directory holding ``meta.yaml``.

    Returns:
        dict[str, str]: Artifact key to absolute path.

    Raises:
        FileNotFoundError: If the directory has no ``meta.yaml``.
        BundleMetadataError: If ``meta.yaml`` is malformed.
    """
    root = bundle_root.expanduser().absolute()
    if not (root / META_FILENAME).is_file():
        raise FileNotFoundError(f"No {META_FILENAME} in bundle directory {root}.")
    metadata = load_bundle_metadata(root)
    entries = {**metadata.files, **metadata.yaml_files}
    return {key: str(root / relpath) for key, relpath in entries.items()}


def check_artifacts_exist(artifacts: Mapping[str, Any]) -> None:
    """Raise ``FileNotFoundError`` naming the first artifact path that does not exist."""
    for key, value in artifacts.items():
        for path in _iter_paths(value):
            if not path.expanduser().exists():
                raise FileNotFoundError(f"Artifact {key!r} not found: {path}")


def inference_config_path(
    artifacts: Mapping[str, Any],
    bundle_root: Path | None,
    metadata: BundleMetadata,
) -> Path | None:
    """Find the bundle's inference config.

    Order: the artifact named by ``meta.yaml``'s ``inference_config_key``, the
    ``inference_config`` artifact, then ``<bundle_root>/conf/inference.yaml``.

    Returns:
        Path | None: Absolute path of the config, or ``None`` if the bundle has none.
    """
    for key in (metadata.inference_config_key, DEFAULT_INFERENCE_CONFIG_KEY):
        if key and key in artifacts:
            return Path(artifacts[key]).expanduser().absolute()
    if bundle_root is not None:
        candidate = bundle_root / DEFAULT_INFERENCE_CONFIG_RELPATH
        if candidate.is_file():
            return candidate
    return None


def train_config_sample_rate(train_config: Any) -> int:
    """The model's sample rate from its espnet2 training config (default 16000).

    ``frontend_conf.fs`` (speech in; ``16k`` style allowed), else a synthesis model's
    ``tts_conf.sampling_rate`` or ``feats_extract_conf.fs`` (speech out).
    """
    if not isinstance(train_config, dict):
        return DEFAULT_SAMPLE_RATE
    candidates = (
        (train_config.get("frontend_conf") or {}).get("fs"),
        (train_config.get("tts_conf") or {}).get("sampling_rate"),
        (train_config.get("feats_extract_conf") or {}).get("fs"),
    )
    fs = next((value for value in candidates if value is not None), DEFAULT_SAMPLE_RATE)
    if isinstance(fs, str):
        import humanfriendly

        return int(humanfriendly.parse_size(fs))
    return int(fs)
