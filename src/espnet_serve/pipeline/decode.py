"""The one segment pipeline: audio segments in, decoded :class:`Segment` s out.

The library transcriber, the model service, the warm-up and ``espnet-serve eval``
all decode through :class:`SegmentDecoder`: the model family's executor
(:mod:`espnet_serve.executors`) decodes each batch (one ``forward_batch`` call,
every sample its own result or error) and reads each output's best hypothesis,
without the model's special symbols (``<unk>``, ``<sos/eos>``, ...);
for the segments that ask, words are timed with the CTC head
(:mod:`espnet_serve.pipeline.align`) on the encoder output the decode pass
already computed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

from espnet_serve.audio.segmenter import AudioSegment
from espnet_serve.backends.sample_errors import InvalidSampleError
from espnet_serve.executors import (
    DecodeOptions,
    Executor,
    Hypothesis,
    UnsupportedFamilyError,
    executor_for,
)
from espnet_serve.executors.base import TRANSCRIBE
from espnet_serve.pipeline.align import Alignment, CtcAligner
from espnet_serve.pipeline.types import (
    BAD_MODEL_OUTPUT,
    DECODE_FAILED,
    INVALID_AUDIO,
    Outcome,
    Segment,
    SegmentDecodeError,
    Word,
)

logger = logging.getLogger(__name__)


class SegmentDecoder:
    """Decodes batches of audio segments with one session.

    Args:
        session: An ``InferenceSession`` of a served speech-to-text family (built with
            ``prefer_model_batch=True`` to decode each batch in one backend call).
        sample_rate: The model's sample rate (for word times).
        family: The model's family, as import recorded it (default: found from the
            session's backend class).

    Raises:
        UnsupportedFamilyError: If no executor serves the session's backend, or its family
            does not decode speech.
    """

    def __init__(self, session: Any, sample_rate: int, *, family: str | None = None) -> None:
        self.session = session
        self.sample_rate = sample_rate
        executor = executor_for(session, family)
        if not isinstance(executor, Executor):
            raise UnsupportedFamilyError(
                f"The {executor.family} family does not decode speech (it does: "
                f"{', '.join(executor.tasks)})."
            )
        self.executor: Executor = executor

    @cached_property
    def aligner(self) -> CtcAligner | None:
        """The CTC aligner, or ``None`` when the model has no CTC head (built on first use)."""
        backend = self.executor.ctc_backend()
        if backend is None:
            logger.info("No word timestamps for the %s family.", self.executor.family)
            return None
        try:
            return CtcAligner(backend, self.sample_rate)
        except (AttributeError, ValueError) as exc:
            logger.info("No word timestamps for this model: %s", exc)
            return None

    @property
    def word_timestamps(self) -> bool:
        """Whether the model can time words."""
        return self.aligner is not None

    def decode(
        self,
        segments: Sequence[AudioSegment],
        *,
        words: bool | Sequence[bool] = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Outcome]:
        """Decode one batch; each segment gets its :class:`Segment` or its error, in order.

        Args:
            segments: The batch.
            words: Time the words of every segment, or of those marked ``True``.
            options: What each segment's request asks (language, task, prompt; default:
                transcribe as the bundle says). Translations are never word-timed.

        Returns:
            list[Segment | SegmentDecodeError]: One outcome per segment.
        """
        if not segments:
            return []
        asked = list(options) if options is not None else [DecodeOptions()] * len(segments)
        timed = [words] * len(segments) if isinstance(words, bool) else list(words)
        timed = [t and a.task == TRANSCRIBE for t, a in zip(timed, asked, strict=True)]
        waves = [segment.samples for segment in segments]
        aligner = self.aligner if any(timed) else None
        keep = self.executor.keep_encoder_output() if aligner else contextlib.nullcontext({})
        with keep as encoded:
            outputs = self.executor.decode(waves, asked)
        hypotheses = [
            _read(self.executor, segment, output, option)
            for segment, output, option in zip(segments, outputs, asked, strict=True)
        ]
        alignments: list[Alignment | None] = [None] * len(segments)
        wanted = [i for i, h in enumerate(hypotheses) if timed[i] and isinstance(h, Hypothesis)]
        if aligner is not None and wanted:
            try:
                aligned = aligner.align(
                    [waves[i] for i in wanted],
                    [hypotheses[i].text for i in wanted],  # type: ignore[union-attr]
                    encoded=[encoded.get(id(waves[i])) for i in wanted],
                    leading_frames=self.executor.leading_frames,
                )
            except Exception:  # the transcripts stand; their words stay untimed
                logger.exception(
                    "Aligning %d segments failed; their words are not timed.", len(wanted)
                )
            else:
                for index, alignment in zip(wanted, aligned, strict=True):
                    alignments[index] = alignment
        return [
            found
            if isinstance(found, SegmentDecodeError)
            else _segment(segment, found, alignment, self.sample_rate)
            for segment, found, alignment in zip(segments, hypotheses, alignments, strict=True)
        ]


def _read(
    executor: Executor, segment: AudioSegment, output: Any, options: DecodeOptions
) -> Hypothesis | SegmentDecodeError:
    """The best hypothesis in one session output, or the error the output is or holds.

    Its language is the one the output shows, else the one the request named.
    """
    where = f"the segment at {segment.start:.2f}-{segment.end:.2f} s"
    if isinstance(output, InvalidSampleError):
        return SegmentDecodeError(f"The model cannot decode {where}: {output}", code=INVALID_AUDIO)
    if isinstance(output, BaseException):
        error = SegmentDecodeError(
            f"the model failed to decode {where} ({output or type(output).__name__})",
            code=DECODE_FAILED,
        )
        error.__cause__ = output
        return error
    try:
        hypothesis = executor.without_special_symbols(executor.read(output))
    except TypeError as exc:
        return SegmentDecodeError(
            f"the model's output for {where} holds no transcript ({exc})", code=BAD_MODEL_OUTPUT
        )
    if hypothesis.language is None and options.language is not None:
        return replace(hypothesis, language=options.language)
    return hypothesis


def _segment(
    audio: AudioSegment, hypothesis: Hypothesis, alignment: Alignment | None, sample_rate: int
) -> Segment:
    """The :class:`Segment` of a decoded audio segment, its words moved to recording time.

    ``tokens`` are the hypothesis' own token ids where the output holds them, else
    the aligned transcript's. Without an alignment (not asked for, or the transcript
    could not be aligned), ``words`` is empty. Utterances the model timed become the
    segment's :attr:`Segment.utterances`, each with the words whose middle falls in it.
    """
    words = ()
    if alignment is not None:
        words = tuple(
            Word(
                word=w.word,
                start=round(audio.offset + w.start, 3),
                end=round(audio.offset + w.end, 3),
            )
            for w in alignment.words
        )
    tokens = hypothesis.token_ids
    if tokens is None:
        tokens = alignment.tokens if alignment is not None else ()
    segment = Segment(
        id=audio.index,
        start=round(audio.start, 3),
        end=round(audio.end, 3),
        text=hypothesis.text.strip(),
        words=words,
        tokens=tokens,
        avg_logprob=alignment.avg_logprob if alignment is not None else 0.0,
        no_speech_prob=audio.no_speech_prob,
        language=hypothesis.language,
    )
    if not hypothesis.utterances:
        return segment
    utterances = _utterances(audio, segment, hypothesis, sample_rate)
    return segment.model_copy(update={"utterances": utterances})


def _utterances(
    audio: AudioSegment, segment: Segment, hypothesis: Hypothesis, sample_rate: int
) -> tuple[Segment, ...]:
    """The utterances of ``hypothesis`` as segments in recording time, within the audio.

    The segment's words go to the utterances in order, as many to each as its text has
    (the last one takes any left).
    """
    clip_end = audio.offset + audio.samples.size / sample_rate
    spans = [
        (
            round(min(audio.offset + u.start, clip_end), 3),
            round(clip_end if u.end is None else min(audio.offset + u.end, clip_end), 3),
        )
        for u in hypothesis.utterances
    ]
    words: list[tuple[Word, ...]] = []
    left = segment.words
    for n, utterance in enumerate(hypothesis.utterances):
        count = len(left) if n == len(spans) - 1 else len(utterance.text.split())
        words.append(left[:count])
        left = left[count:]
    return tuple(
        segment.model_copy(
            update={
                "start": start,
                "end": end,
                "text": utterance.text.strip(),
                "tokens": utterance.token_ids,
                "words": words[n],
            }
        )
        for n, (utterance, (start, end)) in enumerate(
            zip(hypothesis.utterances, spans, strict=True)
        )
    )
