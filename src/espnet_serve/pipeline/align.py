"""Word timing by CTC forced alignment of a transcript to the model's own CTC output.

ESPnet's attention decoders give no timestamps; the CTC head of a hybrid model
does: the transcript's tokens are aligned to the encoder frames' CTC posteriors
(``torchaudio.functional.forced_align``, Viterbi over the CTC topology), and a
word spans from the first frame of its first token to the end of the last frame
of its last token. The encoder output is the one the decode pass computed, where the
executor keeps it (``Executor.keep_encoder_output``); otherwise the clips are encoded
again, together in one padded pass (:func:`espnet_serve.backends.encoding.encode_padded`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchaudio.functional as audio_functional

from espnet_serve.backends.encoding import encode_padded, extract_features
from espnet_serve.pipeline.types import Word

logger = logging.getLogger(__name__)
SPACE_TOKENS = frozenset({"<space>", "\u2581"})  # espnet's char-level space, sentencepiece's
WORD_START_PREFIX = "\u2581"  # sentencepiece marks the first piece of a word


@dataclass(frozen=True)
class Alignment:
    """A clip's transcript aligned to its audio.

    Attributes:
        words: Each word with its time, in seconds from the start of the clip.
        tokens: The transcript's token ids in the model's vocabulary.
        avg_logprob: Mean CTC log-probability of the frames the tokens were aligned to.
    """

    words: tuple[Word, ...]
    tokens: tuple[int, ...]
    avg_logprob: float


class CtcAligner:
    """Aligns transcripts with the CTC head of an espnet2 ASR backend.

    Args:
        backend: ``Speech2Text`` or ``BatchedSpeech2Text`` (anything with
            ``asr_model``, ``tokenizer`` and ``converter``).
        sample_rate: The clips' sample rate.

    Raises:
        ValueError: If the model has no CTC head or no tokenizer.
    """

    def __init__(self, backend: Any, sample_rate: int) -> None:
        from espnet2.text.word_tokenizer import WordTokenizer  # model side only (HTTP layer: types)

        self.asr_model = backend.asr_model
        self.tokenizer = backend.tokenizer
        self.converter = backend.converter
        if getattr(self.asr_model, "ctc", None) is None or self.tokenizer is None:
            raise ValueError("Word timestamps need a model with a CTC head and a tokenizer.")
        self.whole_word_tokens = isinstance(self.tokenizer, WordTokenizer)
        self.sample_rate = sample_rate
        self.blank = int(getattr(self.asr_model, "blank_id", 0))
        self.device = next(self.asr_model.parameters()).device

    @torch.inference_mode()
    def align(
        self,
        clips: Sequence[np.ndarray],
        texts: Sequence[str],
        encoded: Sequence[torch.Tensor | None] | None = None,
        leading_frames: int = 0,
    ) -> list[Alignment | None]:
        """Align each clip's transcript; ``None`` where it cannot be aligned.

        Args:
            clips: The clips' audio.
            texts: Their transcripts.
            encoded: Each clip's encoder output ``(frames, dim)`` from the decode pass,
                where it was kept (``None``: the clip is encoded here).
            leading_frames: Frames at the start of every kept output that hold no audio
                (OWSM-CTC's prompt tokens). The transcript is aligned over all frames, as
                the model emitted it; a token aligned there starts at 0 s.

        A transcript cannot be aligned when it has more tokens (plus the blanks
        between repeats) than the clip has encoder frames.
        """
        alignments: list[Alignment | None] = [None] * len(clips)
        outputs = list(encoded) if encoded is not None else [None] * len(clips)
        todo = [i for i, text in enumerate(texts) if text.strip()]
        for index in set(range(len(clips))) - set(todo):
            alignments[index] = Alignment(words=(), tokens=(), avg_logprob=0.0)
        missing = [i for i in todo if outputs[i] is None]
        if missing:
            for index, output in zip(
                missing, self._encode([clips[i] for i in missing]), strict=True
            ):
                outputs[index] = output
        for index in todo:
            output = outputs[index]
            assert output is not None
            log_probs = self.asr_model.ctc.log_softmax(output.unsqueeze(0)).float().cpu()
            lead = leading_frames if encoded is not None and encoded[index] is not None else 0
            audio_frames = max(output.size(0) - lead, 1)
            seconds_per_frame = len(clips[index]) / self.sample_rate / audio_frames
            alignments[index] = self._align_one(log_probs, texts[index], seconds_per_frame, lead)
        return alignments

    def _encode(self, clips: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Each clip's encoder output ``(frames, dim)``, from one padded encoder pass."""
        feats = [
            extract_features(
                self.asr_model, torch.as_tensor(clip, dtype=torch.float32, device=self.device)
            )
            for clip in clips
        ]
        encoded, lengths = encode_padded(self.asr_model, feats)
        return [encoded[row, : int(length)] for row, length in enumerate(lengths)]

    def _align_one(
        self, log_probs: torch.Tensor, text: str, seconds_per_frame: float, lead: int = 0
    ) -> Alignment | None:
        """Viterbi-align one transcript to one clip's CTC posteriors (``lead`` frames no audio)."""
        tokens = self.tokenizer.text2tokens(text)
        token_ids = [int(t) for t in self.converter.tokens2ids(tokens)]
        keep = [i for i, t in enumerate(token_ids) if t != self.blank]
        targets = torch.tensor([[token_ids[i] for i in keep]], dtype=torch.int32)
        try:
            path, scores = audio_functional.forced_align(log_probs, targets, blank=self.blank)
        except RuntimeError as exc:  # more tokens than frames
            logger.debug("Cannot align %r: %s", text, exc)
            return None
        spans = audio_functional.merge_tokens(path[0], scores[0].exp())
        frames = [(max(span.start - lead, 0), max(span.end - lead, 0)) for span in spans]
        aligned = dict(zip(keep, frames, strict=True))
        words = group_into_words(
            tokens, aligned, seconds_per_frame, whole_words=self.whole_word_tokens
        )
        token_scores = scores[0][path[0] != self.blank]
        avg_logprob = float(token_scores.mean()) if token_scores.numel() else 0.0
        return Alignment(words=words, tokens=tuple(token_ids), avg_logprob=round(avg_logprob, 4))


def group_into_words(
    tokens: Sequence[str],
    frames: dict[int, tuple[int, int]],
    seconds_per_frame: float,
    *,
    whole_words: bool = False,
) -> tuple[Word, ...]:
    """Group aligned tokens into words.

    Args:
        tokens: The transcript's tokens.
        frames: Token index to its ``(start, end)`` frames (tokens left out were not aligned).
        seconds_per_frame: Duration of one encoder frame.
        whole_words: Every token is a word (espnet2 ``token_type: word``); otherwise
            words are split at space tokens and at sentencepiece word-start pieces.

    Returns:
        tuple[Word, ...]: The words with their times.
    """
    groups: list[list[int]] = []
    for index, token in enumerate(tokens):
        if whole_words:
            groups.append([index])
            continue
        if token in SPACE_TOKENS:
            groups.append([])
            continue
        if token.startswith(WORD_START_PREFIX) or not groups:
            groups.append([])
        groups[-1].append(index)
    words = []
    for group in groups:
        timed = [frames[i] for i in group if i in frames]
        if not timed:
            continue
        text = "".join(tokens[i] for i in group).removeprefix(WORD_START_PREFIX)
        start = timed[0][0] * seconds_per_frame
        end = timed[-1][1] * seconds_per_frame
        words.append(Word(word=text, start=round(start, 3), end=round(end, 3)))
    return tuple(words)
