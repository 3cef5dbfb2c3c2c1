"""The served models as the API sees them: their info, the names they answer to, what they do.

A server serves one model or several (``ESPNET_SERVE_MODEL_TAG``, comma-separated), each
behind its own model service. :class:`ServedModels` picks the one a request names.
"""

from __future__ import annotations

from collections.abc import Sequence

from espnet_serve.executors.base import ENHANCE, SYNTHESIZE, TRANSCRIBE, TRANSLATE
from espnet_serve.languages import language_name
from espnet_serve.serving.errors import ApiError, model_unavailable
from espnet_serve.serving.model_client import ModelClient
from espnet_serve.serving.protocol import OPENAI_VOICES
from espnet_serve.serving.rpc import ModelInfo
from espnet_serve.serving.settings import ServeSettings

# How an error message says what a model does.
TASK_VERBS = {
    TRANSCRIBE: "transcribes",
    TRANSLATE: "translates",
    SYNTHESIZE: "speaks",
    ENHANCE: "enhances",
}


class ServedModel:
    """The model service's model, fetched once it is ready.

    Args:
        settings: Aliases and ``Retry-After``.
        client: The model service.
    """

    def __init__(self, settings: ServeSettings, client: ModelClient) -> None:
        self.settings = settings
        self.client = client
        self._info: ModelInfo | None = None

    async def info(self) -> ModelInfo:
        """The served model's info (503 with the reason until it is ready)."""
        if self._info is None:
            readiness = await self.client.readiness()
            if not readiness.ready:
                raise model_unavailable(readiness.reason, self.settings.retry_after_seconds)
            self._info = await self.client.model_info()
        return self._info

    def aliases(self, info: ModelInfo) -> frozenset[str]:
        """The aliases the model answers to, by its kind.

        A speech-to-text model's (``whisper-1``), a synthesis model's (``tts-1``); none for
        an enhancement model.
        """
        if SYNTHESIZE in info.tasks:
            return self.settings.aliases(speech=True)
        if {TRANSCRIBE, TRANSLATE} & set(info.tasks):
            return self.settings.aliases()
        return frozenset()

    async def language_name(self, language: str | None) -> str:
        """The full name of the language to report; 400 for one the model does not take.

        Args:
            language: A valid ISO-639-1 code (the form checked it), or ``None``: then the
                model's one language, or ``unknown`` for a multilingual model (the handler
                reports the language it identified, where it did).
        """
        info = await self.info()
        if language is None:
            return (
                language_name(info.languages[0]) or "unknown"
                if len(info.languages) == 1
                else "unknown"
            )
        if info.languages and language not in info.languages:
            raise ApiError(
                "unsupported_language",
                f"This model transcribes {', '.join(info.languages)} only, not {language!r}.",
                param="language",
            )
        return language_name(language) or "unknown"

    async def target_language_name(self, target: str) -> str:
        """The full name of a translation's language; 400 for one the model does not write.

        Args:
            target: A valid ISO-639-1 code (the form checked it).
        """
        info = await self.info()
        if info.target_languages and target not in info.target_languages:
            raise ApiError(
                "unsupported_language",
                f"This model translates into {', '.join(info.target_languages)} only, not "
                f"{target!r} (ask for another with the target_language field).",
                param="target_language",
            )
        return language_name(target) or "unknown"

    async def check_task(self, task: str) -> None:
        """400 when the served model does not do ``task`` (``transcribe``, ``translate``)."""
        tasks = (await self.info()).tasks
        if task not in tasks:
            does = " and ".join(TASK_VERBS.get(t, t) for t in tasks)
            raise ApiError(
                "task_unsupported",
                f"This model {does} only: it cannot {task}.",
                param="model",
            )

    async def voice(self, requested: str | None) -> str:
        """The served voice for a request's ``voice``; 400 for one the model does not have.

        ``None`` and OpenAI's voice names (unless the model has a voice so named) give the
        model's default voice.
        """
        voices = (await self.info()).voices
        if requested in voices:
            return requested
        if requested is None or requested in OPENAI_VOICES:
            return voices[0]
        raise ApiError(
            "unknown_voice",
            f"The voice {requested!r} does not exist; this model has: {', '.join(voices)} "
            f"(OpenAI's voice names give {voices[0]!r}).",
            param="voice",
        )

    async def check_speed(self, speed: float) -> None:
        """400 when ``speed`` is not 1 and the model cannot change its speaking rate."""
        info = await self.info()
        if speed != 1.0 and not info.speed_control:
            raise ApiError(
                "speed_unsupported",
                f"This model ({info.family}) cannot change its speaking rate; leave speed at 1.",
                param="speed",
            )

    async def check_word_timestamps(self) -> None:
        """400 when the served model cannot time words."""
        if not (await self.info()).word_timestamps:
            raise ApiError(
                "word_timestamps_unsupported",
                "This model cannot give word timestamps (it has no CTC head).",
                param="timestamp_granularities[]",
            )


class ServedModels:
    """The models this server serves, in the order the settings list them.

    Args:
        models: One :class:`ServedModel` per model service.
    """

    def __init__(self, models: Sequence[ServedModel]) -> None:
        if not models:
            raise ValueError("A server serves at least one model.")
        self.models = list(models)

    async def infos(self) -> list[ModelInfo]:
        """Every model's info (503 with the reason while one is not ready)."""
        return [await model.info() for model in self.models]

    async def named(self, requested: str, task: str | None = None) -> ServedModel:
        """The model ``requested`` names: its tag or name, else an alias; 404 for none.

        An alias (``whisper-1``, ``tts-1``) names the first model of its kind that does
        ``task``, else the first of its kind (whose task check then answers 400). A model
        that is not ready is skipped, unless no ready one is named: then its 503 is raised.
        """
        found: list[tuple[ServedModel, ModelInfo]] = []
        unready: ApiError | None = None
        for model in self.models:
            try:
                found.append((model, await model.info()))
            except ApiError as exc:
                unready = unready or exc
        for model, info in found:
            if requested in {info.tag, info.name}:
                return model
        aliased = [(model, info) for model, info in found if requested in model.aliases(info)]
        doing = [model for model, info in aliased if task is None or task in info.tasks]
        if doing or aliased:
            return (doing or [model for model, _ in aliased])[0]
        if unready is not None:
            raise unready
        names = sorted(
            {name for model, info in found for name in (info.name, *model.aliases(info))}
        )
        tags = ", ".join(repr(info.tag) for _, info in found)
        raise ApiError(
            "model_not_found",
            f"The model {requested!r} does not exist: this server serves {tags} "
            f"(also accepted: {', '.join(names)}).",
        )

    async def streaming(self) -> ServedModel | None:
        """The first ready model that decodes streams (a realtime session's default), if any."""
        for model in self.models:
            try:
                if (await model.info()).streaming:
                    return model
            except ApiError:
                continue
        return None

    async def for_task(self, task: str) -> ServedModel:
        """The first model that does ``task`` (else the first model: its task check refuses)."""
        for model in self.models:
            if task in (await model.info()).tasks:
                return model
        return self.models[0]
