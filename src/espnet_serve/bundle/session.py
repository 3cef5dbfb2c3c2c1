"""``InferenceSession``: direct inference on packaged ESPnet models.

The API follows ESPnet's published-model ``InferenceSession`` contract
(``from_config``, ``from_artifacts``, ``from_pretrained``, ``forward``,
``forward_batch``, ``primary_input_key``, ``get_model``). Differences from the
reference implementation are listed in the class docstring.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from espnet_serve.bundle.config import (
    build_backend,
    build_batched_if_exact,
    load_inference_config,
    override_model,
    to_dict_config,
)
from espnet_serve.bundle.errors import BackendResolutionError
from espnet_serve.bundle.imports import import_object, resolve_object
from espnet_serve.bundle.layout import (
    DEFAULT_INPUT_KEY,
    BundleMetadata,
    artifacts_from_directory,
    check_artifacts_exist,
    find_bundle_root,
    inference_config_path,
    load_bundle_metadata,
)
from espnet_serve.bundle.sources import unpack_bundle_archive
from espnet_serve.bundle.usercode import (
    DEFAULT_USER_CODE_PATHS,
    activate_user_code,
    references_user_code,
    resolve_import_roots,
    user_code_allowed,
    user_code_entries,
)

logger = logging.getLogger(__name__)

DEFAULT_DOWNLOADER_CLASS = "espnet_model_zoo.downloader.ModelDownloader"
MODEL_UNWRAP_ATTRS: tuple[str, ...] = (
    "asr_model",
    "s2t_model",
    "st_model",
    "mt_model",
    "enh_model",
    "classification_model",
    "diar_model",
    "spk_model",
    "uasr_model",
    "asvspoof_model",
    "lid_model",
    "model",
)

OutputFn = Callable[..., Any]


def _prepare_user_code(
    *,
    bundle_root: Path | None,
    config: DictConfig | None,
    extra_references: Sequence[Any],
    metadata: BundleMetadata,
    enable_user_code: bool | None,
    trust_user_code: bool,
    user_code_paths: Sequence[str] | None,
) -> bool:
    """Check trust for bundled user code and activate it when allowed.

    Returns:
        bool: Whether user code was activated.

    Raises:
        UntrustedUserCodeError: If user code is needed without trust.
        RuntimeError: If user code is needed but there is no bundle root.
        UserCodePathError: If an import root lies outside the bundle root.
    """
    entries = user_code_entries(user_code_paths, metadata.user_code_paths)
    plain_config = OmegaConf.to_container(config, resolve=False) if config is not None else None
    # The default root counts too: "src.x" must never import unchecked, whatever the entries.
    roots = {*entries, *DEFAULT_USER_CODE_PATHS}
    referenced = references_user_code([plain_config, *extra_references], roots)
    if not user_code_allowed(
        enable_user_code=enable_user_code,
        trust_user_code=trust_user_code,
        referenced=referenced,
    ):
        return False
    if bundle_root is None:
        raise RuntimeError(
            "Bundled user code was requested, but no bundle root is known: pass artifacts "
            "inside an unpacked bundle, or set recipe_dir in the inference config."
        )
    activate_user_code(resolve_import_roots(bundle_root, entries))
    return True


@dataclass(frozen=True)
class BuildOptions:
    """The options the session constructors share (see :meth:`InferenceSession.from_artifacts`)."""

    input_key: str | Sequence[str] | None = None
    output_fn_path: str | None = None
    enable_user_code: bool | None = None
    trust_user_code: bool = False
    user_code_paths: Sequence[str] | None = None
    prefer_model_batch: bool = False
    fallback_to_single_on_batch_error: bool = True
    batched_backend: bool = False

    def prepare_user_code(
        self,
        *,
        bundle_root: Path | None,
        config: DictConfig | None,
        metadata: BundleMetadata,
        extra_references: Sequence[Any] = (),
    ) -> bool:
        """Check trust for bundled user code and activate it when allowed (see above)."""
        return _prepare_user_code(
            bundle_root=bundle_root,
            config=config,
            extra_references=[self.output_fn_path, *extra_references],
            metadata=metadata,
            enable_user_code=self.enable_user_code,
            trust_user_code=self.trust_user_code,
            user_code_paths=self.user_code_paths,
        )

    def batching(self) -> dict[str, bool]:
        """The session's ``forward_batch`` defaults."""
        return {
            "prefer_model_batch": self.prefer_model_batch,
            "fallback_to_single_on_batch_error": self.fallback_to_single_on_batch_error,
        }


class InferenceSession:
    """User-facing inference wrapper for packaged ESPnet models.

    Wraps an inference backend such as ``espnet2.bin.asr_inference.Speech2Text``
    (or the batched ``espnet_serve`` backend) and applies the recipe's
    ``output_fn(data=..., model_output=..., idx=...)`` to its output.

    Build one with :meth:`from_config`, :meth:`from_pretrained` (a model tag,
    a local archive or an unpacked bundle directory) or :meth:`from_artifacts`.
    Bundled user code (``src/``) is importable only with ``trust_user_code=True``.

    Beyond the reference implementation:
        - the inference config's ``model.device`` wins; ``"auto"`` or none picks
          ``cuda`` (first visible GPU) when available, else ``cpu``;
        - user-code roots resolving outside the bundle are refused, and an
          explicit ``user_code_paths`` argument overrides ``meta.yaml``;
        - ``from_pretrained`` accepts an unpacked bundle directory and
          ``downloader_kwargs`` (e.g. ``{"cachedir": ...}``);
        - ``forward_batch`` raises ``ValueError`` on an empty batch in every
          mode and can return per-sample exceptions (``return_exceptions``).

    Args:
        model: Instantiated inference backend.
        input_key: Input field name or names expected by the backend.
        output_fn_path: Optional dotted output-function path compatible with the
            recipe ``output_fn(data=..., model_output=..., idx=...)`` contract.
        output_fn: Optional already imported output function. Use this instead
            of ``output_fn_path`` when the caller already has the function.
        prefer_model_batch: Whether :meth:`forward_batch` should try a single
            batched backend call before falling back to per-sample execution.
        fallback_to_single_on_batch_error: Whether :meth:`forward_batch` should
            fall back to per-sample execution after a batched call fails.
        bundle_root: Optional unpacked model bundle root.
        bundle_metadata: Optional metadata loaded from ``meta.yaml``.
        artifacts: Optional resolved artifact mapping used to build the backend.

    Raises:
        ValueError: If both ``output_fn_path`` and ``output_fn`` are provided.

    Examples:
        >>> session = InferenceSession.from_pretrained("model.tar.gz", trust_user_code=True)
        >>> result = session(audio_array)
        >>> batch = session.forward_batch([audio_a, audio_b])
    """

    def __init__(
        self,
        model: Any,
        *,
        input_key: str | Sequence[str] = DEFAULT_INPUT_KEY,
        output_fn_path: str | None = None,
        output_fn: OutputFn | None = None,
        prefer_model_batch: bool = False,
        fallback_to_single_on_batch_error: bool = True,
        bundle_root: Path | None = None,
        bundle_metadata: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, Any] | None = None,
    ) -> None:
        if output_fn_path is not None and output_fn is not None:
            raise ValueError("Pass only one of output_fn_path or output_fn, not both.")
        self.model = model
        self.input_key: str | list[str] = (
            [str(k) for k in input_key]
            if isinstance(input_key, list | tuple | ListConfig)
            else str(input_key)
        )
        self.output_fn_path = output_fn_path
        self.output_fn: OutputFn | None = (
            output_fn if output_fn is not None else _load_output_fn(output_fn_path)
        )
        self.prefer_model_batch = prefer_model_batch
        self.fallback_to_single_on_batch_error = fallback_to_single_on_batch_error
        self.bundle_root = bundle_root
        self.bundle_metadata = dict(bundle_metadata or {})
        self.artifacts = dict(artifacts or {})

    # ------------------------------------------------------------------ builders

    @classmethod
    def from_config(
        cls,
        inference_config: Mapping[str, Any] | DictConfig,
        *,
        enable_user_code: bool | None = None,
        trust_user_code: bool = False,
        user_code_paths: Sequence[str] | None = None,
        prefer_model_batch: bool = False,
        fallback_to_single_on_batch_error: bool = True,
    ) -> InferenceSession:
        """Build a session directly from an inference config.

        Args:
            inference_config: Config containing at least ``model`` and optionally
                ``input_key``, ``output_fn`` and ``recipe_dir``.
            enable_user_code: Whether to add recipe-local user code such as
                ``src/`` to ``sys.path`` before backend construction.
            trust_user_code: Explicit opt-in required to run recipe code.
            user_code_paths: Relative import roots under ``recipe_dir``.
                Defaults to ``("src",)``.
            prefer_model_batch: Whether :meth:`forward_batch` tries one batched
                backend call by default.
            fallback_to_single_on_batch_error: Whether failed batched calls fall
                back to per-sample execution.

        Returns:
            InferenceSession: Config-backed inference session.

        Raises:
            RuntimeError: If user code was requested but ``recipe_dir`` is unavailable.
            ValueError: If untrusted user code execution was requested.
        """
        options = BuildOptions(
            enable_user_code=enable_user_code,
            trust_user_code=trust_user_code,
            user_code_paths=user_code_paths,
            prefer_model_batch=prefer_model_batch,
            fallback_to_single_on_batch_error=fallback_to_single_on_batch_error,
        )
        config = to_dict_config(inference_config)
        recipe_dir = config.get("recipe_dir")
        bundle_root = Path(recipe_dir).absolute() if recipe_dir else None
        options.prepare_user_code(bundle_root=bundle_root, config=config, metadata=BundleMetadata())
        return cls(
            build_backend(config),
            input_key=config.get("input_key", DEFAULT_INPUT_KEY),
            output_fn_path=config.get("output_fn"),
            bundle_root=bundle_root,
            **options.batching(),
        )

    @classmethod
    def from_artifacts(
        cls,
        artifacts: Mapping[str, Any],
        *,
        backend_class: str | type | None = None,
        input_key: str | Sequence[str] | None = None,
        output_fn_path: str | None = None,
        enable_user_code: bool | None = None,
        trust_user_code: bool = False,
        user_code_paths: Sequence[str] | None = None,
        prefer_model_batch: bool = False,
        fallback_to_single_on_batch_error: bool = True,
        batched_backend: bool = False,
        **backend_kwargs: Any,
    ) -> InferenceSession:
        """Build a session from already resolved model artifact paths.

        Args:
            artifacts: Mapping returned by a model downloader or unpacker.
            backend_class: Optional backend class (or dotted path) override.
                When omitted, the bundle's inference config is used and its
                ``model`` node instantiated.
            input_key: Optional input field override; else ``config.input_key``.
            output_fn_path: Optional dotted recipe output-function path.
            enable_user_code: Whether to activate bundled user code before
                backend construction.
            trust_user_code: Explicit opt-in required to run bundled code.
            user_code_paths: Relative import roots under the bundle root.
            prefer_model_batch: Whether :meth:`forward_batch` tries one batched
                backend call first.
            fallback_to_single_on_batch_error: Whether failed batched calls fall
                back to per-sample execution.
            batched_backend: Build the batched equivalent of a per-utterance
                config target (``Speech2Text`` becomes
                ``espnet_serve.backends.BatchedSpeech2Text``, same options and
                hypotheses). Other targets, and ``backend_class``, are kept.
            **backend_kwargs: Extra constructor kwargs for ``backend_class``;
                with an inference config, they replace the ``model`` node's
                options (e.g. ``beam_size=8``).

        Returns:
            InferenceSession: Artifact-backed inference session.

        Raises:
            FileNotFoundError: If an artifact path does not exist.
            BundleMetadataError: If the bundle's ``meta.yaml`` is malformed.
            BackendResolutionError: If there is no inference config and no ``backend_class``.
            RuntimeError: If user code was requested but the bundle root is unknown.
            ValueError: If untrusted user code execution was requested.
        """
        options = BuildOptions(
            input_key=input_key,
            output_fn_path=output_fn_path,
            enable_user_code=enable_user_code,
            trust_user_code=trust_user_code,
            user_code_paths=user_code_paths,
            prefer_model_batch=prefer_model_batch,
            fallback_to_single_on_batch_error=fallback_to_single_on_batch_error,
            batched_backend=batched_backend,
        )
        return cls._build(artifacts, backend_class, options, backend_kwargs)

    @classmethod
    def _build(
        cls,
        artifacts: Mapping[str, Any],
        backend_class: str | type | None,
        options: BuildOptions,
        backend_kwargs: Mapping[str, Any],
    ) -> InferenceSession:
        """Build a session from artifacts (what :meth:`from_artifacts` documents).

        ``backend_class`` is resolved only after the user-code trust check: a dotted path
        into the bundle's code must not import before it.
        """
        check_artifacts_exist(artifacts)
        bundle_root = find_bundle_root(artifacts)
        metadata = load_bundle_metadata(bundle_root)
        config_path = inference_config_path(artifacts, bundle_root, metadata)
        loaded = (
            load_inference_config(config_path, bundle_root=bundle_root)
            if config_path is not None and backend_class is None
            else None
        )
        config = (
            override_model(loaded, backend_kwargs, batched=options.batched_backend)
            if loaded is not None
            else None
        )
        options.prepare_user_code(
            bundle_root=bundle_root,
            config=config,
            metadata=metadata,
            extra_references=[backend_class],
        )
        common = {
            "bundle_root": bundle_root,
            "bundle_metadata": metadata.model_dump(exclude_none=True),
            "artifacts": artifacts,
            **options.batching(),
        }
        if loaded is not None and config is not None:
            backend, batched = build_batched_if_exact(
                loaded, backend_kwargs, batched=options.batched_backend
            )
            if options.batched_backend and not batched:
                common["prefer_model_batch"] = False  # one clip per backend call
            return cls(
                backend,
                input_key=(
                    options.input_key
                    if options.input_key is not None
                    else config.get("input_key", DEFAULT_INPUT_KEY)
                ),
                output_fn_path=options.output_fn_path or config.get("output_fn"),
                **common,
            )
        if backend_class is None:
            raise BackendResolutionError(
                "Cannot tell how to build the model: the bundle has no inference config "
                "(no 'inference_config' artifact, no meta.yaml inference_config_key, no "
                "conf/inference.yaml). Pass backend_class=, e.g. "
                "'espnet2.bin.asr_inference.Speech2Text'."
            )
        backend_cls = resolve_object(backend_class)
        init_kwargs = {**artifacts, **backend_kwargs}
        if hasattr(backend_cls, "from_pretrained"):
            model = backend_cls.from_pretrained(model_tag=None, **init_kwargs)
        else:
            model = backend_cls(**init_kwargs)
        return cls(
            model,
            input_key=options.input_key if options.input_key is not None else DEFAULT_INPUT_KEY,
            output_fn_path=options.output_fn_path,
            **common,
        )

    @classmethod
    def from_pretrained(
        cls,
        model_tag: str,
        *,
        backend_class: str | type | None = None,
        downloader_class: str | type = DEFAULT_DOWNLOADER_CLASS,
        input_key: str | Sequence[str] | None = None,
        output_fn_path: str | None = None,
        enable_user_code: bool | None = None,
        trust_user_code: bool = False,
        user_code_paths: Sequence[str] | None = None,
        prefer_model_batch: bool = False,
        fallback_to_single_on_batch_error: bool = True,
        downloader_kwargs: Mapping[str, Any] | None = None,
        batched_backend: bool = False,
        **backend_kwargs: Any,
    ) -> InferenceSession:
        """Fetch a packaged model and build an inference session from it.

        Args:
            model_tag: A tag or Hugging Face repo id understood by
                ``espnet_model_zoo``, a local packed archive, or an unpacked
                bundle directory (which goes straight to :meth:`from_artifacts`).
            backend_class: Optional backend class override. When omitted, the
                published inference config is used to instantiate ``model``.
            downloader_class: Dotted model-downloader class path or class
                object. Defaults to ``espnet_model_zoo.downloader.ModelDownloader``.
            input_key: Optional input field override.
            output_fn_path: Optional dotted recipe output-function path.
            enable_user_code: Whether to activate bundled user code such as
                ``src/`` before backend construction.
            trust_user_code: Explicit opt-in required to run bundled code.
            user_code_paths: Relative import roots under the unpacked bundle.
            prefer_model_batch: Whether :meth:`forward_batch` tries one batched
                backend call first.
            fallback_to_single_on_batch_error: Whether failed batched calls fall
                back to per-sample execution.
            downloader_kwargs: Constructor kwargs for the downloader, e.g.
                ``{"cachedir": "/models"}`` for a pre-filled offline cache.
            batched_backend: Build the batched equivalent of the config's
                per-utterance target (see :meth:`from_artifacts`).
            **backend_kwargs: Extra constructor kwargs for ``backend_class``;
                with an inference config, they replace the ``model`` node's options.

        Returns:
            InferenceSession: The loaded session.

        Raises:
            UnsafeArchiveError: If a local archive has unsafe members (``..``,
                absolute paths, links out, device files) or exceeds the limits.
            Any exception raised by the configured downloader or backend constructor.
        """
        options = BuildOptions(
            input_key=input_key,
            output_fn_path=output_fn_path,
            enable_user_code=enable_user_code,
            trust_user_code=trust_user_code,
            user_code_paths=user_code_paths,
            prefer_model_batch=prefer_model_batch,
            fallback_to_single_on_batch_error=fallback_to_single_on_batch_error,
            batched_backend=batched_backend,
        )
        if backend_class is not None and enable_user_code is False:
            backend_cls = resolve_object(backend_class)
            if not hasattr(backend_cls, "from_pretrained"):
                raise RuntimeError(
                    "backend_class must provide from_pretrained() when enable_user_code=False."
                )
            return cls(
                backend_cls.from_pretrained(model_tag=model_tag, **backend_kwargs),
                input_key=input_key if input_key is not None else DEFAULT_INPUT_KEY,
                output_fn_path=output_fn_path,
                **options.batching(),
            )
        local = Path(model_tag).expanduser()
        if local.is_dir():
            artifacts = artifacts_from_directory(local)
        else:
            downloader = resolve_object(downloader_class)(**dict(downloader_kwargs or {}))
            if local.is_file():
                # espnet2's unpack extracts without any filter: the same result, extracted safely.
                artifacts = unpack_bundle_archive(local, Path(downloader.cachedir))
            else:
                artifacts = downloader.download_and_unpack(model_tag)
        return cls._build(artifacts, backend_class, options, backend_kwargs)

    # ----------------------------------------------------------------- inference

    @property
    def primary_input_key(self) -> str:
        """Return the single configured input key.

        Raises:
            RuntimeError: If the session expects multiple input keys.
        """
        if isinstance(self.input_key, list):
            if len(self.input_key) != 1:
                raise RuntimeError(
                    f"This model takes several inputs {self.input_key}: pass each sample "
                    "as a mapping with those keys, not a single value."
                )
            return self.input_key[0]
        return self.input_key

    @property
    def input_keys(self) -> list[str]:
        """All configured input keys, as a list."""
        return list(self.input_key) if isinstance(self.input_key, list) else [self.input_key]

    def _single_inputs(self, sample: Any) -> tuple[dict[str, Any], Any]:
        """Normalise one sample into backend kwargs and the ``data`` passed to ``output_fn``."""
        if isinstance(sample, Mapping):
            return {key: _require(sample, key) for key in self.input_keys}, sample
        key = self.primary_input_key
        return {key: sample}, {key: sample}

    def _batch_inputs(self, samples: list[Any]) -> tuple[dict[str, list[Any]], list[Any]]:
        """Normalise samples into batched backend kwargs and per-sample ``data``."""
        if all(isinstance(sample, Mapping) for sample in samples):
            inputs = {key: [_require(s, key) for s in samples] for key in self.input_keys}
            return inputs, samples
        key = self.primary_input_key
        return {key: samples}, [{key: sample} for sample in samples]

    def _apply_output_fn(self, *, data: Any, model_output: Any, idx: Any) -> Any:
        """Apply the recipe output function when one is configured."""
        if self.output_fn is None:
            return model_output
        return self.output_fn(data=data, model_output=model_output, idx=idx)

    def forward(self, sample: Any, *, idx: Any = 0) -> Any:
        """Run inference for a single sample.

        Args:
            sample: Either a raw input value for single-input models or a
                mapping containing the configured input key(s).
            idx: Optional sample identifier forwarded to ``output_fn``.

        Returns:
            Any: Backend output, or the transformed output from ``output_fn``.

        Raises:
            KeyError: If a required input field is missing.
            RuntimeError: If a scalar sample is used with multiple input keys.
        """
        inputs, data = self._single_inputs(sample)
        return self._apply_output_fn(data=data, model_output=self.model(**inputs), idx=idx)

    def __call__(self, sample: Any, *, idx: Any = 0) -> Any:
        """Alias for :meth:`forward`."""
        return self.forward(sample, idx=idx)

    def forward_batch(
        self,
        samples: Sequence[Any],
        *,
        indices: Sequence[Any] | None = None,
        use_model_batch: bool | None = None,
        fallback_to_single_on_error: bool | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run inference for a batch of samples.

        Args:
            samples: Sequence of raw inputs or sample mappings.
            indices: Optional per-sample identifiers forwarded to ``output_fn``.
            use_model_batch: Whether to try one batched backend call. When
                ``None``, uses the session's ``prefer_model_batch``.
            fallback_to_single_on_error: Whether to fall back to per-sample
                execution after a failed batched call. When ``None``, uses the
                session default.
            return_exceptions: Put a failing sample's exception in its slot
                instead of raising it, so the other samples still get results.
                Covers samples that fail in per-sample execution and samples a
                batching backend reports as failed in their slot.

        Returns:
            list[Any]: One output per sample, in input order.

        Raises:
            RuntimeError: If batched backend execution fails and fallback is disabled.
            ValueError: If ``samples`` is empty or ``indices`` length does not match.
        """
        sample_list = list(samples)
        if not sample_list:
            raise ValueError("forward_batch requires at least one sample.")
        index_list = list(range(len(sample_list))) if indices is None else list(indices)
        if len(index_list) != len(sample_list):
            raise ValueError(
                f"indices has {len(index_list)} items but samples has {len(sample_list)}."
            )
        batch = self.prefer_model_batch if use_model_batch is None else use_model_batch
        fallback = (
            self.fallback_to_single_on_batch_error
            if fallback_to_single_on_error is None
            else fallback_to_single_on_error
        )
        if batch:
            inputs, data = self._batch_inputs(sample_list)
            try:
                outputs = self._run_model_batch(inputs, data, index_list)
            except Exception as exc:
                if not fallback:
                    raise RuntimeError(f"Batched inference failed: {exc}") from exc
                logger.info("Batched inference failed (%s); running samples one by one.", exc)
            else:
                failure = next((o for o in outputs if isinstance(o, Exception)), None)
                if failure is not None and not return_exceptions:
                    raise failure
                return outputs
        return [
            self._forward_or_exception(sample, idx, return_exceptions)
            for sample, idx in zip(sample_list, index_list, strict=True)
        ]

    def _run_model_batch(
        self, inputs: dict[str, list[Any]], data: list[Any], indices: list[Any]
    ) -> list[Any]:
        """One batched backend call; the result must hold one output per sample.

        A batching backend may put an exception in a sample's slot (a sample it
        could not decode); ``output_fn`` then sees only the other samples and
        the exception stays in its slot.
        """
        model_output = self.model(**inputs)
        failed = _exception_slots(model_output, len(data))
        if not failed:
            result = self._apply_output_fn(data=data, model_output=model_output, idx=indices)
            return _one_output_per_sample(result, len(data))
        outputs = list(model_output)
        decoded = [slot for slot in range(len(data)) if slot not in failed]
        if decoded:
            result = self._apply_output_fn(
                data=[data[slot] for slot in decoded],
                model_output=[model_output[slot] for slot in decoded],
                idx=[indices[slot] for slot in decoded],
            )
            for slot, output in zip(
                decoded, _one_output_per_sample(result, len(decoded)), strict=True
            ):
                outputs[slot] = output
        return outputs

    def _forward_or_exception(self, sample: Any, idx: Any, return_exceptions: bool) -> Any:
        """Run :meth:`forward`, returning its exception instead when asked to."""
        if not return_exceptions:
            return self.forward(sample, idx=idx)
        try:
            return self.forward(sample, idx=idx)
        except Exception as exc:
            return exc

    def get_model(
        self, *, unwrap: bool = True, attr_names: Sequence[str] = MODEL_UNWRAP_ATTRS
    ) -> Any:
        """Return the inference backend or the trainable model inside it.

        Args:
            unwrap: Follow wrapper attributes (``asr_model``, ``s2t_model``,
                ..., ``model``) down to the innermost model. If ``False``,
                return the backend itself.
            attr_names: Wrapper attribute names, checked in order at each step.

        Returns:
            Any: The backend, or the deepest model reachable through ``attr_names``.
        """
        current = self.model
        seen: set[int] = set()
        while unwrap and id(current) not in seen:
            seen.add(id(current))
            inner = next(
                (
                    getattr(current, name)
                    for name in attr_names
                    if getattr(current, name, None) is not None
                    and getattr(current, name) is not current
                ),
                None,
            )
            if inner is None:
                break
            current = inner
        return current


def _require(sample: Mapping[str, Any], key: str) -> Any:
    """Return ``sample[key]`` or raise a ``KeyError`` naming the missing input."""
    if key not in sample:
        raise KeyError(f"Input key {key!r} not found in sample (keys: {sorted(sample)}).")
    return sample[key]


def _exception_slots(model_output: Any, count: int) -> set[int]:
    """Slots of a batched backend result that hold a per-sample exception."""
    if not isinstance(model_output, list) or len(model_output) != count:
        return set()
    return {slot for slot, output in enumerate(model_output) if isinstance(output, Exception)}


def _one_output_per_sample(result: Any, count: int) -> list[Any]:
    """Check that a batched result holds ``count`` outputs (a non-list is one output)."""
    outputs = result if isinstance(result, list) else [result]
    if len(outputs) != count:
        raise RuntimeError(
            "Batched inference returned the wrong number of outputs: "
            f"expected {count}, got {len(outputs)}."
        )
    return outputs


def _load_output_fn(path: str | None) -> OutputFn | None:
    """Import the output function named by a dotted path, if any."""
    if path is None:
        return None
    function = import_object(path)
    if not callable(function):
        raise TypeError(f"output_fn {path!r} is not callable.")
    return function
