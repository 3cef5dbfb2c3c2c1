"""Inference configs: load them with omegaconf and instantiate their backend.

An inference config is a YAML mapping with a ``model`` node (an object spec
with ``_target_``) and optional ``input_key``, ``output_fn`` and
``recipe_dir``. Loading supports a hydra-style ``defaults`` list and the
``load_line`` / ``load_yaml`` resolvers; ``recipe_dir`` is bound to the
bundle root before interpolations are resolved.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from espnet_serve.backends.offline import block_runtime_downloads, training_only_stand_ins
from espnet_serve.bundle.errors import InferenceConfigError
from espnet_serve.bundle.imports import import_object
from espnet_serve.executors import batched_class_of, unbatched_reason

AUTO_DEVICE = "auto"
_MAX_DEFAULTS_DEPTH = 8
# Options only the batched equivalents take (dropped when a model is decoded unbatched).
BATCHED_ONLY_OPTIONS = frozenset({"max_bucket_size", "max_bucket_samples", "decoding", "dtype"})
logger = logging.getLogger(__name__)


def _load_lines(path: str) -> list[str]:
    """Resolver ``${load_line:path}``: the non-empty lines of a text file."""
    text = Path(path).read_text(encoding="utf-8")
    return [line.rstrip("\n") for line in text.splitlines() if line.strip()]


def _load_yaml(path: str) -> Any:
    """Resolver ``${load_yaml:path}``: the content of a YAML file."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def register_resolvers() -> None:
    """Register the ``load_line`` and ``load_yaml`` resolvers with omegaconf (idempotent)."""
    OmegaConf.register_new_resolver("load_line", _load_lines, replace=True)
    OmegaConf.register_new_resolver("load_yaml", _load_yaml, replace=True)


def to_dict_config(config: Mapping[str, Any] | DictConfig) -> DictConfig:
    """Return a detached, unresolved ``DictConfig`` copy of a config-like mapping."""
    if isinstance(config, DictConfig):
        return OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    return OmegaConf.create(dict(config))


def _defaults_entry_path(entry: Any, config_dir: Path, source: Path) -> Path | None:
    """Map one ``defaults`` entry to the YAML file it names (``None`` for ``_self_``)."""
    if entry == "_self_":
        return None
    if isinstance(entry, str):
        relative = Path(entry)
    elif isinstance(entry, Mapping) and len(entry) == 1:
        ((group, name),) = entry.items()
        relative = Path(str(group)) / str(name)
    else:
        raise InferenceConfigError(
            f"{source}: unsupported defaults entry {entry!r}; use 'name', "
            "'{group: name}' or '_self_'."
        )
    path = config_dir / relative
    return path if path.suffix in (".yaml", ".yml") else path.with_suffix(".yaml")


def _load_with_defaults(path: Path, depth: int = 0) -> DictConfig:
    """Load a YAML config and merge its hydra-style ``defaults`` list (``_self_`` last)."""
    if depth > _MAX_DEFAULTS_DEPTH:
        raise InferenceConfigError(f"{path}: defaults nested deeper than {_MAX_DEFAULTS_DEPTH}.")
    if not path.is_file():
        raise FileNotFoundError(f"Inference config not found: {path}")
    own = OmegaConf.load(path)
    if not isinstance(own, DictConfig):
        raise InferenceConfigError(f"{path} must hold a mapping.")
    defaults = own.pop("defaults", None)
    if defaults is None:
        return own
    if not isinstance(defaults, ListConfig):
        raise InferenceConfigError(f"{path}: 'defaults' must be a list.")
    entries = OmegaConf.to_container(defaults, resolve=False)
    if "_self_" not in entries:
        entries.append("_self_")
    parts = []
    for entry in entries:
        entry_path = _defaults_entry_path(entry, path.parent, path)
        parts.append(own if entry_path is None else _load_with_defaults(entry_path, depth + 1))
    merged = OmegaConf.merge(*parts)
    assert isinstance(merged, DictConfig)
    return merged


def load_inference_config(path: Path, *, bundle_root: Path | None) -> DictConfig:
    """Load an inference config file, bind ``recipe_dir`` and resolve interpolations.

    Args:
        path: The config file.
        bundle_root: Bundle root bound to ``recipe_dir``; when ``None`` the
            file's own ``recipe_dir`` (if any) is kept.

    Returns:
        DictConfig: The resolved config.

    Raises:
        FileNotFoundError: If the file (or a ``defaults`` entry) does not exist.
        InferenceConfigError: If the file is not a mapping or ``defaults`` is malformed.
    """
    register_resolvers()
    config = _load_with_defaults(path)
    if bundle_root is not None:
        config.recipe_dir = str(bundle_root)
    # Rebuild rather than OmegaConf.resolve(): a resolver may turn a string into a list.
    resolved = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    assert isinstance(resolved, DictConfig)
    return resolved


def resolve_device(requested: str | None) -> str:
    """Return the torch device to use.

    A concrete device (``cpu``, ``cuda``, ``cuda:1``) is returned as given;
    ``"auto"`` or ``None`` picks ``cuda`` (the first visible GPU) when CUDA is
    available, else ``cpu``.
    """
    if requested not in (None, "", AUTO_DEVICE):
        return str(requested)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _accepts_keyword(target: Any, name: str) -> bool:
    """Whether calling ``target`` accepts the keyword ``name`` (or ``**kwargs``)."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _names(target: Any, name: str) -> bool:
    """Whether ``target``'s signature names the keyword ``name`` (``**kwargs`` aside)."""
    try:
        return name in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def override_model(
    config: DictConfig, overrides: Mapping[str, Any], *, batched: bool = False
) -> DictConfig:
    """Return a copy of ``config`` with entries of its ``model`` node replaced.

    Args:
        config: A loaded inference config.
        overrides: Model constructor options that replace the config's
            (e.g. ``{"beam_size": 8}``); ``_target_`` may be replaced too.
        batched: Swap a per-utterance target for its family's batched class
            (:func:`espnet_serve.executors.batched_class_of`; other targets are kept).

    Returns:
        DictConfig: The new config; ``config`` itself is left unchanged.
    """
    config = to_dict_config(config)
    model_node = config.get("model")
    if not isinstance(model_node, DictConfig):
        return config
    for key, value in overrides.items():
        model_node[key] = value
    batched_class = batched_class_of(str(model_node.get("_target_", "")))
    if batched and batched_class is not None:
        model_node._target_ = batched_class
    return config


def build_backend(config: DictConfig) -> Any:
    """Instantiate ``config.model`` with the resolved device.

    The model node's ``device`` wins when it names a device; ``"auto"`` or an
    absent ``device`` is replaced by :func:`resolve_device`'s choice when the
    target accepts a ``device`` keyword. Nested mappings reach constructors
    as plain containers (``_convert_="all"``). Options of the batched backends
    (:data:`BATCHED_ONLY_OPTIONS`, e.g. ``decoding: greedy_ctc``) that the target does
    not name are dropped, with a warning: the target decodes with its own search.

    Args:
        config: A loaded inference config.

    Returns:
        Any: The instantiated backend.

    Raises:
        InferenceConfigError: If the config has no ``model`` node with ``_target_``.
    """
    model_node = config.get("model")
    if not isinstance(model_node, DictConfig) or "_target_" not in model_node:
        raise InferenceConfigError(
            "The inference config needs a 'model' mapping with a '_target_' "
            "(e.g. espnet2.bin.asr_inference.Speech2Text)."
        )
    model_node = to_dict_config(model_node)
    block_runtime_downloads()  # the target's import may load espnet2, which may try nltk
    target = import_object(str(model_node._target_))
    unknown = sorted(k for k in BATCHED_ONLY_OPTIONS & set(model_node) if not _names(target, k))
    if unknown:  # a batched backend's options, in a config that names espnet2's class
        logger.warning(
            "%s takes no %s (options of espnet-serve's batched backends): it decodes with its "
            "own search.",
            model_node._target_,
            ", ".join(f"{key}: {model_node[key]}" for key in unknown),
        )
        for key in unknown:
            del model_node[key]
    if "device" in model_node or _accepts_keyword(target, "device"):
        model_node.device = resolve_device(model_node.get("device"))
    with training_only_stand_ins():
        return instantiate(model_node, _convert_="all")


def build_batched_if_exact(
    config: DictConfig, overrides: Mapping[str, Any], *, batched: bool
) -> tuple[Any, bool]:
    """Build ``config``'s backend with ``overrides``; its batched equivalent when asked and exact.

    The config's own per-utterance class is built instead, without the batched-only
    options, and a log line says why, when its family has no batched class
    (:func:`espnet_serve.executors.unbatched_reason`) or the batched class refuses the
    model (``UnbatchableModelError``: an n-gram, a transducer decoder, ...): the
    model is then decoded one clip at a time, exactly as that class decodes it.

    Returns:
        tuple[Any, bool]: The backend, and whether it is the batched one.
    """
    from espnet_serve.backends.sample_errors import UnbatchableModelError

    target = (
        str(config.model.get("_target_", "")) if isinstance(config.get("model"), DictConfig) else ""
    )
    plain = {k: v for k, v in overrides.items() if k not in BATCHED_ONLY_OPTIONS}
    reason = unbatched_reason(target)
    if batched and reason:
        logger.info("Decoding one clip at a time with %s: %s.", target, reason)
        return build_backend(override_model(config, plain)), False
    try:
        return build_backend(override_model(config, overrides, batched=batched)), batched
    except Exception as exc:
        refusal = _cause(exc, UnbatchableModelError)
        if not batched or refusal is None:
            raise
    logger.warning(
        "This model cannot be decoded exactly in padded batches (%s); serving it one clip at "
        "a time with %s.",
        refusal,
        target,
    )
    return build_backend(override_model(config, plain)), False


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of kind ``kind`` in its chain (hydra wraps them)."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, kind):
        seen = seen.__cause__ or seen.__context__
    return seen
