"""Model bundles in the BentoML model store: verified on the way in and on the way out.

Store layout of one model (``$BENTOML_HOME/models/<name>/<version>/``)::

    model.yaml      BentoML's record: labels, and metadata with the sha256 of every file
    bundle/         the relocatable bundle: meta.yaml, conf/, the artifacts, src/ (trusted only)

:func:`stage_bundle` fetches a tag, archive or directory (see
:mod:`espnet_serve.sources`), keeps only what ``meta.yaml`` and the configs
refer to, refuses untrusted user code, rewrites the YAML paths into their
relocatable form (see :mod:`espnet_serve.relocate`), writes the bundle and
returns its :class:`~espnet_serve.spec.ModelSpec`; :func:`import_bundle`
saves both in the model store. :func:`load_session` re-hashes every file,
refuses any difference, then builds the ``InferenceSession`` from the recorded
spec with :func:`session_from_bundle`, which ``eval`` and the bench use on a
freshly staged bundle.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import yaml
from bentoml.exceptions import NotFound

from espnet_serve.bundle import (
    AUXILIARY_TASKS,
    DEFAULT_INFERENCE_CONFIG_KEY,
    DEFAULT_INFERENCE_CONFIG_RELPATH,
    DEFAULT_INPUT_KEY,
    DEFAULT_SAMPLE_RATE,
    META_FILENAME,
    SPEECH2TEXT,
    TRAIN_CONFIG_SUFFIX,
    load_bundle_metadata,
    train_config_sample_rate,
)
from espnet_serve.errors import (
    BundleIntegrityError,
    BundleMetadataError,
    InferenceConfigError,
    UntrustedUserCodeError,
)
from espnet_serve.relocate import (
    RECIPE_DIR_PREFIX,
    materialize,
    plain_relpath,
    referenced_files,
    to_bundle_form,
)
from espnet_serve.session import InferenceSession
from espnet_serve.sources import FetchedSource, fetch_source, file_sha256
from espnet_serve.spec import STORE_FORMAT, ModelSpec
from espnet_serve.usercode import (
    DEFAULT_USER_CODE_PATHS,
    references_user_code,
    resolve_import_roots,
    user_code_entries,
)

logger = logging.getLogger(__name__)

BUNDLE_DIRNAME = "bundle"
DEFAULT_MODEL_NAME = "espnet-digits-asr"
DEFAULT_MODEL_LANGUAGES = ("en",)
TRUST_FLAG = "--trust-user-code"
_INVALID_TAG_CHARS = re.compile(r"[^a-z0-9._-]+")
_MAX_TAG_LENGTH = 63


@dataclass
class BundlePlan:
    """What a stored bundle will hold, before anything is written.

    Attributes:
        contents: Bundle-relative path to its content: new bytes (rewritten
            YAML) or the source file to copy.
        inference_config: Bundle-relative path of the inference config.
        bind: YAML files whose relative paths are bound to absolute ones at load.
        task: ``asr``, ``st``, ... (from the ``<task>_train_config`` artifact key).
        input_key: The backend's input keyword.
        sample_rate: Sample rate the model expects (``frontend_conf.fs``).
        languages: ISO-639-1 codes the model transcribes (``meta.yaml`` or given at import).
        user_code_included: Whether bundled user code was copied (trusted).
        user_code_paths: The bundle's user-code import roots.
        espnet_version: The espnet version recorded in ``meta.yaml`` at packing.
    """

    contents: dict[str, bytes | Path] = field(default_factory=dict)
    inference_config: str = DEFAULT_INFERENCE_CONFIG_RELPATH.as_posix()
    bind: list[str] = field(default_factory=list)
    task: str = "unknown"
    input_key: str = DEFAULT_INPUT_KEY
    sample_rate: int = DEFAULT_SAMPLE_RATE
    languages: list[str] = field(default_factory=list)
    user_code_included: bool = False
    user_code_paths: list[str] = field(default_factory=list)
    espnet_version: str = ""


# --------------------------------------------------------------------- planning


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


def _task(yaml_keys: list[str]) -> str:
    """The model's task from its ``<task>_train_config`` key (``asr``, ``st``, ...)."""
    tasks = [k.removesuffix(TRAIN_CONFIG_SUFFIX) for k in yaml_keys if k.endswith("_train_config")]
    main = [t for t in tasks if t not in AUXILIARY_TASKS]
    return (main or ["unknown"])[0]


def _generated_inference_config(members: dict[str, str], task: str) -> dict[str, Any]:
    """An inference config for an ASR bundle that ships none (``Speech2Text`` on its artifacts)."""
    if task != "asr":
        raise InferenceConfigError(
            f"The bundle has no inference config ({DEFAULT_INFERENCE_CONFIG_RELPATH}, or an "
            f"'{DEFAULT_INFERENCE_CONFIG_KEY}' entry in meta.yaml) and its task is {task!r}; "
            "only ASR bundles get a generated one. Add an inference config to the bundle."
        )
    model = {"_target_": SPEECH2TEXT}
    model.update({key: RECIPE_DIR_PREFIX + relpath for key, relpath in members.items()})
    model["device"] = "auto"
    return {"recipe_dir": ".", "input_key": DEFAULT_INPUT_KEY, "model": model}


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
        InferenceConfigError: If there is no inference config and none can be generated.
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
        task=_task(list(yaml_files)),
        espnet_version=str(meta_document.get("espnet", "")),
        languages=metadata.languages,
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
            "No inference config in the bundle: generated %s (Speech2Text).", default_config
        )

    entries = user_code_entries(user_code_paths, metadata.user_code_paths)
    if user_code_paths is not None:
        meta_document["user_code_paths"] = entries
        meta_changed = True

    inference = _rewrite_yaml(plan, root, plan.inference_config, inference_config=True)
    if not isinstance(inference, dict):
        raise InferenceConfigError(f"{plan.inference_config} must hold a mapping.")
    plan.input_key = str(inference.get("input_key", DEFAULT_INPUT_KEY))
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
    train_config = yaml_files.get(f"{plan.task}{TRAIN_CONFIG_SUFFIX}")
    if train_config is not None:
        plan.sample_rate = train_config_sample_rate(_read_yaml(root / train_config))

    config_dir = Path(plan.inference_config).parent
    companions = _files_below(root / config_dir, root) if config_dir != Path(".") else []
    for relpath in sorted({*files.values(), *referenced, *companions, *user_files}):
        plan.contents.setdefault(relpath, root / relpath)
    plan.contents[META_FILENAME] = (
        _dump_yaml(meta_document) if meta_changed else root / META_FILENAME
    )
    return plan


# ---------------------------------------------------------------------- import


def model_name_for(source_name: str) -> str:
    """A valid BentoML model name for a source name (``espnet/digits`` -> ``espnet-digits``)."""
    name = _INVALID_TAG_CHARS.sub("-", source_name.lower()).strip("-._")[:_MAX_TAG_LENGTH]
    return name.rstrip("-._") or "espnet-model"


def _write_bundle_files(plan: BundlePlan, target: Path) -> dict[str, str]:
    """Write the planned files under ``target``; return relpath -> sha256."""
    for relpath, content in sorted(plan.contents.items()):
        destination = target / relpath
        destination.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            destination.write_bytes(content)
        else:
            shutil.copyfile(content, destination)
    return {relpath: file_sha256(target / relpath) for relpath in sorted(plan.contents)}


def stage_bundle(
    source: str | Path,
    target: Path,
    *,
    trust_user_code: bool = False,
    user_code_paths: Sequence[str] | None = None,
    cachedir: Path | None = None,
    languages: Sequence[str] | None = None,
) -> tuple[ModelSpec, FetchedSource]:
    """Fetch a source and write its verified, relocatable bundle to ``target``.

    What :func:`import_bundle` stores, and what ``eval`` and the bench load
    from directly: the same bundle and the same :class:`ModelSpec`.

    Args:
        source: An ``espnet_model_zoo`` tag or Hugging Face repo id, a local
            archive (``.zip`` / ``.tar.gz`` / ``.tgz`` / ``.tar``) or an
            unpacked bundle directory.
        target: An empty or missing directory for the bundle.
        trust_user_code: Include the bundle's user code (``src/``) and allow
            its inference config to reference it.
        user_code_paths: Bundle-relative import roots overriding ``meta.yaml``.
        cachedir: ``espnet_model_zoo``'s download cache (tags only).
        languages: ISO-639-1 codes the model transcribes, replacing ``meta.yaml``'s.

    Returns:
        tuple[ModelSpec, FetchedSource]: The bundle's spec, and what was fetched.

    Raises:
        UnsafeArchiveError: If an archive could write outside its target or is too big.
        UntrustedUserCodeError: If user code is referenced without ``trust_user_code``.
        BundleMetadataError: If ``meta.yaml`` is missing or malformed.
    """
    with tempfile.TemporaryDirectory(prefix="espnet-serve-fetch-") as scratch:
        fetched = fetch_source(source, Path(scratch), cachedir)
        plan = plan_bundle(
            fetched,
            trust_user_code=trust_user_code,
            user_code_paths=list(user_code_paths) if user_code_paths is not None else None,
        )
        digests = _write_bundle_files(plan, target)
    total = sum((target / relpath).stat().st_size for relpath in digests)
    logger.info("Bundle: %d files, %.1f MB", len(digests), total / 1e6)
    spec = ModelSpec(
        files=digests,
        bind_yaml_files=plan.bind,
        inference_config=plan.inference_config,
        input_key=plan.input_key,
        sample_rate=plan.sample_rate,
        task=plan.task,
        user_code_trusted=plan.user_code_included,
        user_code_paths=plan.user_code_paths,
        source=str(source),
        source_kind=fetched.kind,
        source_sha256=fetched.archive_sha256,
        espnet_version=plan.espnet_version,
        languages=list(languages) if languages is not None else plan.languages,
    )
    return spec, fetched


def import_bundle(
    source: str | Path,
    *,
    name: str | None = None,
    trust_user_code: bool = False,
    user_code_paths: Sequence[str] | None = None,
    cachedir: Path | None = None,
    languages: Sequence[str] | None = None,
) -> bentoml.Model:
    """Import a model into the BentoML model store as a verified, relocatable bundle.

    Args:
        source: A tag, archive or bundle directory (see :func:`stage_bundle`).
        name: Model name in the store (default: derived from the source).
        trust_user_code: Include the bundle's user code and allow its config to reference it.
        user_code_paths: Bundle-relative import roots overriding ``meta.yaml``.
        cachedir: ``espnet_model_zoo``'s download cache (tags only).
        languages: ISO-639-1 codes the model transcribes, replacing ``meta.yaml``'s.

    Returns:
        bentoml.Model: The stored model; its metadata is the bundle's :class:`ModelSpec`.

    Raises:
        UnsafeArchiveError: If an archive could write outside its target or is too big.
        UntrustedUserCodeError: If user code is referenced without ``trust_user_code``.
        BundleMetadataError: If ``meta.yaml`` is missing or malformed.
        ValueError: If ``name`` is not a valid BentoML model name.
    """
    if name is not None:
        bentoml.Tag.from_taglike(name)  # an invalid name fails before any work
    with tempfile.TemporaryDirectory(prefix="espnet-serve-import-") as scratch:
        staging = Path(scratch) / BUNDLE_DIRNAME
        spec, fetched = stage_bundle(
            source,
            staging,
            trust_user_code=trust_user_code,
            user_code_paths=user_code_paths,
            cachedir=cachedir,
            languages=languages,
        )
        labels = {
            "task": spec.task,
            "espnet_version": spec.espnet_version or _installed_espnet_version(),
            "source": fetched.name,
            "source_kind": fetched.kind,
            "user_code": "trusted" if spec.user_code_trusted else "none",
        }
        with bentoml.models.create(
            name or model_name_for(fetched.name),
            labels=labels,
            metadata=spec.model_dump(exclude_none=True),
        ) as created:
            shutil.copytree(staging, Path(created.path) / BUNDLE_DIRNAME)
    stored = bentoml.models.get(created.tag)
    verified_bundle_dir(stored)
    logger.info("Saved %s in the model store (%s)", stored.tag, stored.path)
    return stored


def _installed_espnet_version() -> str:
    import espnet

    return str(espnet.__version__)


# ------------------------------------------------------------------------ load


ModelRef = bentoml.Model | bentoml.models.BentoModel | bentoml.Tag | str


def stored_model(model: ModelRef) -> bentoml.Model:
    """Return the stored model for a model object, a ``BentoModel`` reference or a tag."""
    if isinstance(model, bentoml.Model):
        return model
    if isinstance(model, bentoml.models.BentoModel):
        return model.resolve()
    return bentoml.models.get(model)


def verified_bundle_dir(model: bentoml.Model) -> Path:
    """Check every bundle file against the sha256 digests recorded at import.

    Args:
        model: A model imported by :func:`import_bundle`.

    Returns:
        Path: The verified bundle directory inside the model store.

    Raises:
        BundleIntegrityError: If a file changed, is missing, was added, or is
            not a regular file, or the model was not imported by espnet-serve.
    """
    recorded = model.info.metadata
    expected = recorded.get("files")
    if recorded.get("format") != STORE_FORMAT or not isinstance(expected, dict):
        raise BundleIntegrityError(
            f"Model {model.tag} has no espnet-serve file digests: import it with "
            "'espnet-serve build' (store format {STORE_FORMAT})."
        )
    bundle_dir = Path(model.path) / BUNDLE_DIRNAME
    found: dict[str, Path] = {}
    odd: list[str] = []
    for path in sorted(bundle_dir.rglob("*")):
        relpath = path.relative_to(bundle_dir).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            odd.append(relpath)
        elif path.is_file():
            found[relpath] = path
    missing = sorted(set(expected) - set(found))
    added = sorted(set(found) - set(expected))
    changed = [
        r for r in sorted(set(expected) & set(found)) if file_sha256(found[r]) != expected[r]
    ]
    problems = {
        "changed": changed,
        "missing": missing,
        "unexpected": added,
        "not regular files": odd,
    }
    listed = "; ".join(f"{kind}: {', '.join(paths)}" for kind, paths in problems.items() if paths)
    if listed:
        raise BundleIntegrityError(
            f"Model {model.tag} at {bundle_dir} does not match the digests recorded at "
            f"import ({listed}). Refusing to load it; re-import the model."
        )
    return bundle_dir


def session_from_bundle(
    bundle_dir: Path, spec: ModelSpec, *, name: str = "model", **session_kwargs: Any
) -> InferenceSession:
    """Build the ``InferenceSession`` of a verified bundle from its spec.

    The session runs from a scratch view of the bundle (links to its files,
    YAML paths bound to the view) that is removed when the session is
    garbage-collected or the process exits. Trust, input key and user-code
    roots are the spec's.

    Args:
        bundle_dir: The bundle (verified against ``spec.files``).
        spec: What import recorded.
        name: For the view's directory name and logs.
        **session_kwargs: Passed to ``InferenceSession.from_pretrained``
            (e.g. ``prefer_model_batch=True``, ``batched_backend=True``, backend options).

    Returns:
        InferenceSession: The loaded session.

    Raises:
        TypeError: If ``trust_user_code`` is passed (it is the spec's).
    """
    if "trust_user_code" in session_kwargs:
        raise TypeError(
            f"trust_user_code is recorded when the model is imported ({TRUST_FLAG}); "
            "it cannot be changed at load."
        )
    view = Path(tempfile.mkdtemp(prefix=f"espnet-serve-{name}-"))
    try:
        materialize(bundle_dir, spec.files, spec.bind_yaml_files, view)
        session = InferenceSession.from_pretrained(
            str(view),
            trust_user_code=spec.user_code_trusted,
            user_code_paths=spec.user_code_paths or None,
            **{"input_key": spec.input_key, **session_kwargs},
        )
    except BaseException:
        shutil.rmtree(view, ignore_errors=True)
        raise
    weakref.finalize(session, shutil.rmtree, view, ignore_errors=True)
    return session


def load_session(model: ModelRef, **session_kwargs: Any) -> InferenceSession:
    """Verify a stored bundle and build its ``InferenceSession`` (see :func:`session_from_bundle`).

    Args:
        model: A stored model, a ``BentoModel`` reference or a tag (``name:version``).
        **session_kwargs: Passed on, except ``trust_user_code`` (recorded at import).

    Returns:
        InferenceSession: The loaded session.

    Raises:
        BundleIntegrityError: If the stored files differ from the recorded digests.
        TypeError: If ``trust_user_code`` is passed.
    """
    stored = stored_model(model)
    bundle_dir = verified_bundle_dir(stored)
    spec = ModelSpec.model_validate(stored.info.metadata)
    session = session_from_bundle(bundle_dir, spec, name=stored.tag.name, **session_kwargs)
    logger.info("Loaded %s (verified %d files)", stored.tag, len(spec.files))
    return session


def stored_spec(model: ModelRef) -> ModelSpec:
    """The :class:`ModelSpec` recorded when ``model`` was imported."""
    return ModelSpec.model_validate(stored_model(model).info.metadata)


# --------------------------------------------------------------- default model


def default_model_archive() -> Path:
    """The embedded default model archive (``espnet_serve.assets``).

    Raises:
        FileNotFoundError: If this installation has no embedded model.
    """
    try:
        from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE
    except ImportError as exc:
        raise FileNotFoundError(
            "This installation has no embedded default model (espnet_serve.assets)."
        ) from exc
    return Path(DEFAULT_MODEL_ARCHIVE)


def ensure_default_model() -> bentoml.Tag:
    """Make the embedded default model the latest ``espnet-digits-asr`` in the store.

    Nothing is imported when the latest model of that name came from the same
    archive (same sha256); otherwise the archive is imported (trusted: its
    ``output_fn`` is this project's own code).

    Returns:
        bentoml.Tag: The tag of the stored default model.
    """
    archive = default_model_archive()
    digest = file_sha256(archive)
    try:
        latest = bentoml.models.get(f"{DEFAULT_MODEL_NAME}:latest")
    except NotFound:
        latest = None
    if latest is not None and latest.info.metadata.get("source_sha256") == digest:
        logger.info("Default model already in the store: %s", latest.tag)
        return latest.tag
    return import_bundle(
        archive, name=DEFAULT_MODEL_NAME, trust_user_code=True, languages=DEFAULT_MODEL_LANGUAGES
    ).tag
