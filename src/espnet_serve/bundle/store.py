"""Model bundles in the BentoML model store: verified on the way in and on the way out.

Store layout of one model (``$BENTOML_HOME/models/<name>/<version>/``)::

    model.yaml      BentoML's record: labels, and metadata with the sha256 of every file
    bundle/         the relocatable bundle: meta.yaml, conf/, the artifacts, src/ (trusted only)

:func:`stage_bundle` fetches a tag, archive or directory (see
:mod:`espnet_serve.bundle.sources`), keeps only what ``meta.yaml`` and the configs
refer to, refuses untrusted user code, rewrites the YAML paths into their
relocatable form (see :mod:`espnet_serve.bundle.relocate`), writes the bundle and
returns its :class:`~espnet_serve.bundle.spec.ModelSpec`; :func:`import_bundle`
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from espnet_serve.assets import (
    DEFAULT_MODEL_ARCHIVE,
    DEFAULT_STREAMING_ARCHIVE,
    DEFAULT_VOICE_ARCHIVE,
)
from espnet_serve.bundle.errors import BundleIntegrityError, UntrustedUserCodeError
from espnet_serve.bundle.plan import BundlePlan, plan_bundle
from espnet_serve.bundle.relocate import materialize
from espnet_serve.bundle.session import InferenceSession
from espnet_serve.bundle.sources import FetchedSource, fetch_source, file_sha256
from espnet_serve.bundle.spec import STORE_FORMAT, ModelSpec
from espnet_serve.bundle.usercode import TRUST_FLAG

logger = logging.getLogger(__name__)

BUNDLE_DIRNAME = "bundle"
DEFAULT_MODEL_NAME = "espnet-digits-asr"
DEFAULT_VOICE_NAME = "espnet-digits-voice"
DEFAULT_STREAMING_NAME = "espnet-digits-asr-streaming"
DEFAULT_MODEL_LANGUAGES = ("en",)
_INVALID_TAG_CHARS = re.compile(r"[^a-z0-9._-]+")
_MAX_TAG_LENGTH = 63


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
    target_languages: Sequence[str] | None = None,
    sample_rate: int | None = None,
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
        target_languages: ISO-639-1 codes a translation model writes, likewise.
        sample_rate: The model's sample rate, replacing ``meta.yaml``'s and the training
            config's (an enhancement config does not say it).

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
        sample_rate=sample_rate or plan.sample_rate,
        task=plan.task,
        inference_class=plan.inference_class,
        family=plan.family,
        weights_file=plan.weights_file,
        user_code_trusted=plan.user_code_included,
        user_code_paths=plan.user_code_paths,
        source=str(source),
        source_kind=fetched.kind,
        source_sha256=fetched.archive_sha256,
        espnet_version=plan.espnet_version,
        languages=list(languages) if languages is not None else plan.languages,
        target_languages=(
            list(target_languages) if target_languages is not None else plan.target_languages
        ),
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
    target_languages: Sequence[str] | None = None,
    sample_rate: int | None = None,
) -> bentoml.Model:
    """Import a model into the BentoML model store as a verified, relocatable bundle.

    Args:
        source: A tag, archive or bundle directory (see :func:`stage_bundle`).
        name: Model name in the store (default: derived from the source).
        trust_user_code: Include the bundle's user code and allow its config to reference it.
        user_code_paths: Bundle-relative import roots overriding ``meta.yaml``.
        cachedir: ``espnet_model_zoo``'s download cache (tags only).
        languages: ISO-639-1 codes the model transcribes, replacing ``meta.yaml``'s.
        target_languages: ISO-639-1 codes a translation model writes, likewise.
        sample_rate: The model's sample rate, replacing the bundle's (see :func:`stage_bundle`).

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
            target_languages=target_languages,
            sample_rate=sample_rate,
        )
        labels = {
            "task": spec.task,
            "family": spec.family or "none",
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


def stored_spec(model: bentoml.Model) -> ModelSpec:
    """The spec recorded when ``model`` was imported.

    Raises:
        BundleIntegrityError: If the model was not imported by this espnet-serve's store format.
    """
    recorded = model.info.metadata
    if recorded.get("format") != STORE_FORMAT or not isinstance(recorded.get("files"), dict):
        raise BundleIntegrityError(
            f"Model {model.tag} was not imported by this version of espnet-serve (store "
            f"format {recorded.get('format')}, expected {STORE_FORMAT}): import it again with "
            "'espnet-serve build'."
        )
    return ModelSpec.model_validate(recorded)


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
    expected = stored_spec(model).files
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
    spec = stored_spec(stored)
    session = session_from_bundle(bundle_dir, spec, name=stored.tag.name, **session_kwargs)
    logger.info("Loaded %s (verified %d files)", stored.tag, len(spec.files))
    return session


def load_local_session(
    model: str,
    workdir: Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    trust_user_code: bool = False,
    batched: bool = True,
    cachedir: Path | None = None,
) -> tuple[InferenceSession, ModelSpec]:
    """Load a model without the store, as the server loads it, with decoding overrides.

    The source is staged as the model store would hold it (:func:`stage_bundle`:
    safe extraction, trust rules, digests, the recorded spec) under ``workdir``,
    and the session is built from that spec (:func:`session_from_bundle`). For
    ``espnet-serve eval`` and ``transcribe``, the recipe's scoring and the bench.

    Args:
        model: Archive, bundle directory or tag.
        workdir: Where the bundle is staged; it must outlive the session.
        overrides: ``model`` options of the inference config to replace
            (e.g. ``beam_size``).
        trust_user_code: Let the bundle's own code run (always allowed for
            the embedded default model).
        batched: Build the batched backend and batch ``forward_batch`` calls;
            else the config's per-utterance backend, one call per clip.
        cachedir: ``espnet_model_zoo``'s download cache (tags only).

    Returns:
        tuple[InferenceSession, ModelSpec]: The session and the model's spec.

    Raises:
        UntrustedUserCodeError: If the bundle ships code and
            ``trust_user_code`` is false for a model other than the default.
    """
    trusted = trust_user_code or is_default_archive(model)
    bundle_dir = Path(tempfile.mkdtemp(prefix="bundle-", dir=workdir))
    try:
        spec, _ = stage_bundle(model, bundle_dir, trust_user_code=trusted, cachedir=cachedir)
    except UntrustedUserCodeError as exc:
        raise UntrustedUserCodeError(
            f"{model} ships code that would run while decoding (e.g. its output_fn); "
            f"pass {TRUST_FLAG} to allow it, if you trust where the model comes from."
        ) from exc
    session = session_from_bundle(
        bundle_dir,
        spec,
        name="local",
        batched_backend=batched,
        prefer_model_batch=batched,
        **dict(overrides or {}),
    )
    return session, spec


# --------------------------------------------------------------- default model


def is_default_archive(model: str | Path) -> bool:
    """Whether ``model`` is an embedded ASR archive (whose code is ours)."""
    path = Path(model).expanduser()
    embedded = (DEFAULT_MODEL_ARCHIVE.resolve(), DEFAULT_STREAMING_ARCHIVE.resolve())
    return path.is_file() and path.resolve() in embedded


def ensure_default_model(archive: Path = DEFAULT_MODEL_ARCHIVE) -> bentoml.Tag:
    """Make the embedded default model the latest ``espnet-digits-asr`` in the store.

    Nothing is imported when the latest model of that name came from the same
    archive (same sha256) in this store format; otherwise the archive is imported (trusted: its
    ``output_fn`` is this project's own code).

    Args:
        archive: The default model's archive (the embedded one).

    Returns:
        bentoml.Tag: The tag of the stored default model.
    """
    return _ensure_embedded(
        archive, DEFAULT_MODEL_NAME, trust_user_code=True, languages=DEFAULT_MODEL_LANGUAGES
    )


def ensure_default_streaming_model(archive: Path = DEFAULT_STREAMING_ARCHIVE) -> bentoml.Tag:
    """Make the embedded streaming model the latest ``espnet-digits-asr-streaming`` in the store.

    As :func:`ensure_default_model` (the same recipe code, trusted).

    Returns:
        bentoml.Tag: The tag of the stored streaming model.
    """
    return _ensure_embedded(
        archive, DEFAULT_STREAMING_NAME, trust_user_code=True, languages=DEFAULT_MODEL_LANGUAGES
    )


def ensure_default_voice(archive: Path = DEFAULT_VOICE_ARCHIVE) -> bentoml.Tag:
    """Make the embedded default voice the latest ``espnet-digits-voice`` in the store.

    As :func:`ensure_default_model`; the voice has no code of its own.

    Returns:
        bentoml.Tag: The tag of the stored default voice.
    """
    return _ensure_embedded(archive, DEFAULT_VOICE_NAME)


def _ensure_embedded(archive: Path, name: str, **import_options: Any) -> bentoml.Tag:
    """The latest ``name`` in the store, imported from ``archive`` unless it came from it."""
    digest = file_sha256(archive)
    try:
        latest = bentoml.models.get(f"{name}:latest")
    except NotFound:
        latest = None
    recorded = latest.info.metadata if latest is not None else {}
    if latest is not None and (recorded.get("source_sha256"), recorded.get("format")) == (
        digest,
        STORE_FORMAT,
    ):
        logger.info("Embedded model already in the store: %s", latest.tag)
        return latest.tag
    return import_bundle(archive, name=name, **import_options).tag
