"""Plan a bundle before anything is written: what it keeps, with its YAML paths relocatable.

:func:`plan_bundle` reads a fetched source's ``meta.yaml`` and configs, keeps only
the files they refer to (and the inference config's companions), generates an
inference config for an ASR bundle that ships none, refuses referenced user code
without trust, and rewrites the YAML paths into their relocatable form
(:mod:`espnet_serve.bundle.relocate`). :mod:`espnet_serve.bundle.store` writes the plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from espnet_serve.bundle.errors import (
    BundleMetadataError,
    InferenceConfigError,
    UntrustedUserCodeError,
)
from espnet_serve.bundle.layout import (
    AUXILIARY_TASKS,
    DEFAULT_INFERENCE_CONFIG_KEY,
    DEFAULT_INFERENCE_CONFIG_RELPATH,
    DEFAULT_INPUT_KEY,
    DEFAULT_SAMPLE_RATE,
    META_FILENAME,
    MODEL_FILE_SUFFIX,
    TRAIN_CONFIG_SUFFIX,
    load_bundle_metadata,
    train_config_sample_rate,
)
from espnet_serve.bundle.relocate import (
    RECIPE_DIR_PREFIX,
    plain_relpath,
    referenced_files,
    to_bundle_form,
)
from espnet_serve.bundle.sources import FetchedSource
from espnet_serve.bundle.usercode import (
    DEFAULT_USER_CODE_PATHS,
    TRUST_FLAG,
    references_user_code,
    resolve_import_roots,
    user_code_entries,
)
from espnet_serve.executors import family_of
from espnet_serve.executors.asr import SPEECH2TEXT
from espnet_serve.executors.enh import SEPARATE_SPEECH
from espnet_serve.executors.tts import TEXT2SPEECH, unloadable_vocoder

# The backend (and its input key) of a bundle that ships no inference config, by task.
GENERATED_BACKENDS: dict[str, tuple[str, str]] = {
    "asr": (SPEECH2TEXT, DEFAULT_INPUT_KEY),
    "tts": (TEXT2SPEECH, "text"),
    "enh": (SEPARATE_SPEECH, "speech_mix"),
}
# espnet2's packer names a TTS (or enhancement, ...) model's files without a task prefix.
PLAIN_TRAIN_CONFIG = "train_config"
PLAIN_MODEL_FILE = "model_file"

logger = logging.getLogger(__name__)


@dataclass
class BundlePlan:
    """What a stored bundle will hold, before anything is written.

    Attributes:
        contents: Bundle-relative path to its content: new bytes (rewritten
            YAML) or the source file to copy.
        inference_config: Bundle-relative path of the inference config.
        bind: YAML files whose relative paths are bound to absolute ones at load.
        task: ``asr``, ``st``, ... (from the ``<task>_train_config`` artifact key).
        inference_class: The inference config's ``model._target_``.
        family: The executor family serving that class (``None``: not served).
        weights_file: Bundle-relative path of the model's weights (``<task>_model_file``).
        input_key: The backend's input keyword.
        sample_rate: Sample rate the model expects (``frontend_conf.fs``).
        languages: ISO-639-1 codes the model transcribes (``meta.yaml`` or given at import).
        target_languages: ISO-639-1 codes a translation model writes (likewise).
        user_code_included: Whether bundled user code was copied (trusted).
        user_code_paths: The bundle's user-code import roots.
        espnet_version: The espnet version recorded in ``meta.yaml`` at packing.
    """

    contents: dict[str, bytes | Path] = field(default_factory=dict)
    inference_config: str = DEFAULT_INFERENCE_CONFIG_RELPATH.as_posix()
    bind: list[str] = field(default_factory=list)
    task: str = "unknown"
    inference_class: str = ""
    family: str | None = None
    weights_file: str = ""
    input_key: str = DEFAULT_INPUT_KEY
    sample_rate: int = DEFAULT_SAMPLE_RATE
    languages: list[str] = field(default_factory=list)
    target_languages: list[str] = field(default_factory=list)
    user_code_included: bool = False
    user_code_paths: list[str] = field(default_factory=list)
    espnet_version: str = ""


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BundleMetadataError(f"{path} is not valid YAML: {exc}") from exc


def _dump_yaml(document: Any) -> bytes:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode("utf-8")


def _member(root: Path, key: str, value: str) -> str:
    """Check a ``meta.yaml`` entry names a file inside the bundle; return its relpath."""
    relpath = plain_relpath(str(value))
    if relpath is None:
        raise BundleMetadataError(
            f"meta.yaml entry {key}: {value!r} is not a relative path inside the bundle."
        )
    if not (root / relpath).is_file():
        raise FileNotFoundError(f"meta.yaml names {key}: {value!r}, which is not in the bundle.")
    return relpath


def _files_below(directory: Path, root: Path) -> list[str]:
    """Bundle-relative paths of the files under ``directory`` (no bytecode caches)."""
    return sorted(
        path.relative_to(root).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def _task(root: Path, yaml_files: dict[str, str]) -> str:
    """The model's task (``asr``, ``st``, ``tts``, ...).

    From its ``<task>_train_config`` key, or, for what espnet2's packer stores as plain
    ``train_config`` (TTS, enhancement, ...), from the config's model key (``tts``;
    ``separator``: ``enh``).
    """
    tasks = [k.removesuffix(TRAIN_CONFIG_SUFFIX) for k in yaml_files if k.endswith("_train_config")]
    main = [t for t in tasks if t not in AUXILIARY_TASKS]
    if main:
        return main[0]
    config = (
        _read_yaml(root / yaml_files[PLAIN_TRAIN_CONFIG])
        if PLAIN_TRAIN_CONFIG in yaml_files
        else None
    )
    if isinstance(config, dict):
        if "tts" in config:
            return "tts"
        if "separator" in config:
            return "enh"
    return "unknown"


def _generated_inference_config(members: dict[str, str], task: str) -> dict[str, Any]:
    """An inference config for a bundle that ships none.

    ``Speech2Text`` (ASR), ``Text2Speech`` (TTS) or ``SeparateSpeech`` (enhancement) on the
    bundle's artifacts.
    """
    generated = GENERATED_BACKENDS.get(task)
    if generated is None:
        raise InferenceConfigError(
            f"The bundle has no inference config ({DEFAULT_INFERENCE_CONFIG_RELPATH}, or an "
            f"'{DEFAULT_INFERENCE_CONFIG_KEY}' entry in meta.yaml) and its task is {task!r}; "
            "only ASR, TTS and enhancement bundles get a generated one. Add an inference "
            "config to the bundle."
        )
    target, input_key = generated
    model = {"_target_": target}
    model.update({key: RECIPE_DIR_PREFIX + relpath for key, relpath in members.items()})
    model["device"] = "auto"
    return {"recipe_dir": ".", "input_key": input_key, "model": model}


def _user_code_files(
    root: Path,
    inference: Any,
    entries: list[str],
    *,
    trusted: bool,
    explicit_paths: bool,
) -> list[str]:
    """The user-code files to store; refuse referenced code without trust."""
    if not trusted:
        if references_user_code(inference, {*entries, *DEFAULT_USER_CODE_PATHS}):
            raise UntrustedUserCodeError(
                "The model's inference config references code shipped inside the bundle "
                f"(import roots {entries}). Review that code, then pass {TRUST_FLAG} "
                "(trust_user_code=True) to include it."
            )
        if explicit_paths:
            logger.warning("User-code paths are ignored without %s.", TRUST_FLAG)
        return []
    resolved_root = root.resolve()
    files: list[str] = []
    for directory in resolve_import_roots(root, entries)[1:]:
        files.extend(_files_below(directory, resolved_root))
    return files


def _rewrite_yaml(plan: BundlePlan, root: Path, relpath: str, *, inference_config: bool) -> Any:
    """Put a YAML file's paths in bundle form, recording new content in the plan."""
    planned = plan.contents.get(relpath)
    document = yaml.safe_load(planned) if isinstance(planned, bytes) else _read_yaml(root / relpath)
    rewritten = to_bundle_form(document, root, inference_config=inference_config)
    if rewritten != document:
        plan.contents[relpath] = _dump_yaml(rewritten)
    return rewritten


def plan_bundle(
    source: FetchedSource,
    *,
    trust_user_code: bool = False,
    user_code_paths: list[str] | None = None,
) -> BundlePlan:
    """Decide what the stored bundle holds, with its YAML paths in relocatable form.

    Args:
        source: The fetched source (a directory with ``meta.yaml``).
        trust_user_code: Whether bundled user code may be included.
        user_code_paths: Import roots overriding ``meta.yaml``'s ``user_code_paths``.

    Returns:
        BundlePlan: The files and the facts recorded with them.

    Raises:
        BundleMetadataError: If there is no ``meta.yaml`` or it names paths
            outside the bundle.
        FileNotFoundError: If ``meta.yaml`` names a missing file.
        InferenceConfigError: If there is no inference config and none can be generated, or
            it names a vocoder that cannot load here (a parallel_wavegan checkpoint).
        UntrustedUserCodeError: If the config references user code without trust.
        UserCodePathError: If a user-code root lies outside the bundle.
    """
    root = source.root
    if not (root / META_FILENAME).is_file():
        raise BundleMetadataError(
            f"{source.name}: no {META_FILENAME} at the bundle root, so it is not a packed "
            "ESPnet model (expected meta.yaml with 'files' and 'yaml_files')."
        )
    metadata = load_bundle_metadata(root)
    meta_document = _read_yaml(root / META_FILENAME)
    files = {k: _member(root, f"files.{k}", v) for k, v in metadata.files.items()}
    yaml_files = {k: _member(root, f"yaml_files.{k}", v) for k, v in metadata.yaml_files.items()}
    plan = BundlePlan(
        task=_task(root, yaml_files),
        espnet_version=str(meta_document.get("espnet", "")),
        languages=metadata.languages,
        target_languages=metadata.target_languages,
    )

    meta_changed = False
    config_key = metadata.inference_config_key or DEFAULT_INFERENCE_CONFIG_KEY
    default_config = DEFAULT_INFERENCE_CONFIG_RELPATH.as_posix()
    if config_key in yaml_files:
        plan.inference_config = yaml_files[config_key]
    elif (root / default_config).is_file():
        plan.inference_config = default_config
    else:
        generated = _generated_inference_config({**files, **yaml_files}, plan.task)
        plan.contents[default_config] = _dump_yaml(generated)
        meta_document.setdefault("yaml_files", {})[DEFAULT_INFERENCE_CONFIG_KEY] = default_config
        meta_changed = True
        logger.info(
            "No inference config in the bundle: generated %s (%s).",
            default_config,
            generated["model"]["_target_"],
        )

    entries = user_code_entries(user_code_paths, metadata.user_code_paths)
    if user_code_paths is not None:
        meta_document["user_code_paths"] = entries
        meta_changed = True

    inference = _rewrite_yaml(plan, root, plan.inference_config, inference_config=True)
    if not isinstance(inference, dict):
        raise InferenceConfigError(f"{plan.inference_config} must hold a mapping.")
    plan.input_key = str(inference.get("input_key", DEFAULT_INPUT_KEY))
    model_node = inference.get("model")
    plan.inference_class = (
        str(model_node.get("_target_", "")) if isinstance(model_node, dict) else ""
    )
    plan.family = family_of(plan.inference_class)
    vocoder_problem = (
        unloadable_vocoder(model_node) if plan.inference_class == TEXT2SPEECH else None
    )
    if vocoder_problem:
        raise InferenceConfigError(f"{source.name}: {vocoder_problem}")
    plan.weights_file = files.get(
        f"{plan.task}{MODEL_FILE_SUFFIX}", files.get(PLAIN_MODEL_FILE, "")
    )
    user_files = _user_code_files(
        root,
        inference,
        entries,
        trusted=trust_user_code,
        explicit_paths=user_code_paths is not None,
    )
    plan.user_code_included = bool(user_files)
    plan.user_code_paths = entries if trust_user_code else []
    referenced = referenced_files(inference, root)
    plan.bind = sorted(set(yaml_files.values()) - {plan.inference_config})
    for relpath in plan.bind:
        referenced |= referenced_files(
            _rewrite_yaml(plan, root, relpath, inference_config=False), root
        )
    train_config = yaml_files.get(
        f"{plan.task}{TRAIN_CONFIG_SUFFIX}", yaml_files.get(PLAIN_TRAIN_CONFIG)
    )
    if metadata.sample_rate is not None:
        plan.sample_rate = metadata.sample_rate
    elif train_config is not None:
        plan.sample_rate = train_config_sample_rate(_read_yaml(root / train_config))

    config_dir = Path(plan.inference_config).parent
    companions = _files_below(root / config_dir, root) if config_dir != Path(".") else []
    for relpath in sorted({*files.values(), *referenced, *companions, *user_files}):
        plan.contents.setdefault(relpath, root / relpath)
    plan.contents[META_FILENAME] = (
        _dump_yaml(meta_document) if meta_changed else root / META_FILENAME
    )
    return plan
