"""The model spec: what import records about a bundle, and all that a load needs.

``store.stage_bundle`` writes a verified bundle directory and returns its spec;
the model store keeps the spec as the model's metadata. The server (from the
store), ``eval`` and the bench (from a staged copy) all build their session
from a spec and its bundle with ``store.session_from_bundle``: nothing found
at import is looked for again at load.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from espnet_serve.bundle.layout import DEFAULT_INPUT_KEY, DEFAULT_SAMPLE_RATE

STORE_FORMAT = 2  # 2: the family, inference class and weights file are recorded


class ModelSpec(BaseModel):
    """A bundle's facts, decided once at import.

    Attributes:
        format: Store format of the record.
        files: Every bundle-relative file path -> its sha256.
        bind_yaml_files: YAML files whose relative paths are bound to the view at load.
        inference_config: Bundle-relative path of the inference config.
        input_key: The backend's input keyword(s).
        sample_rate: Sample rate the model expects (``frontend_conf.fs``).
        task: ``asr``, ``st``, ... (from the ``<task>_train_config`` artifact key).
        inference_class: The inference config's ``model._target_``.
        family: The executor family that serves it (``None``: no served family).
        weights_file: Bundle-relative path of the model's weights ("" if not named).
        user_code_trusted: Whether bundled code was reviewed and included (it may run).
        user_code_paths: The bundle's user-code import roots (empty when untrusted).
        source: What was imported (tag, archive path or directory).
        source_kind: ``tag``, ``archive`` or ``directory``.
        source_sha256: The archive's digest, for an archive.
        espnet_version: The espnet version ``meta.yaml`` recorded at packing ("" if none).
        languages: ISO-639-1 codes the model transcribes (empty: not recorded).
        target_languages: ISO-639-1 codes a translation model writes (empty: not recorded).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: int = STORE_FORMAT
    files: dict[str, str]
    bind_yaml_files: list[str] = Field(default_factory=list)
    inference_config: str
    input_key: str | list[str] = DEFAULT_INPUT_KEY
    sample_rate: int = DEFAULT_SAMPLE_RATE
    task: str = "unknown"
    inference_class: str = ""
    family: str | None = None
    weights_file: str = ""
    user_code_trusted: bool = False
    user_code_paths: list[str] = Field(default_factory=list)
    source: str = ""
    source_kind: str = ""
    source_sha256: str | None = None
    espnet_version: str = ""
    languages: list[str] = Field(default_factory=list)
    target_languages: list[str] = Field(default_factory=list)

    @property
    def weights_sha256(self) -> str:
        """The digest of the model's weights ("" when the bundle does not name them)."""
        return self.files.get(self.weights_file, "")
