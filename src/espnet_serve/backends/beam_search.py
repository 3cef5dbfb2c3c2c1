"""Joint CTC/attention beam search vectorised across utterances x beams.

Reproduces ``espnet.nets.batch_beam_search.BatchBeamSearch`` as
``Speech2Text`` configures it (scorers ``decoder``, ``ctc`` as a partial
scorer, ``length_bonus``, a language model ``lm``; ``pre_beam_score_key="full"``
unless CTC only), for
every utterance of a bucket at once. The running hypotheses of all utterances
are rows of one batch (an utterance has one row at the first step, then at most
``beam_size``); each row knows its utterance and its rank (slot) in that
utterance's beam. Per utterance and step, as in ``BatchBeamSearch``:

- weighted scores = ``(1 - ctc_weight) * decoder + penalty + lm_weight * lm``
  (full scorers, summed in that order; the language model scores every row in
  one ``batch_score`` call, the call ``BatchBeamSearch`` makes per utterance),
  pre-beam = top ``int(1.5 * beam_size)`` of those per hypothesis, then
  ``+ ctc_weight * ctc`` (CTC prefix scores of the pre-beam tokens and
  ``<eos>``), then ``+`` the hypothesis' running score;
- the best ``beam_size`` (hypothesis, token) pairs over the utterance's
  hypotheses (ranked in slot order, as ``BatchBeamSearch`` flattens them)
  become its new hypotheses, in score order;
- at the utterance's last step (``maxlen - 1``) ``<eos>`` is appended to every
  hypothesis; hypotheses ending in ``<eos>`` end (kept if the step is at least
  ``minlen``) and leave the batch;
- with ``maxlenratio == 0`` espnet's ``end_detect`` may stop the utterance;
  it also stops when none of its hypotheses runs. Finished utterances leave
  the batch.

One stop is this module's own, and it never changes the answer: an utterance
also stops once its ``nbest``-th best ended hypothesis scores above every
running one (:func:`settled`). Every scorer here adds a log probability (at
most 0) or a non-positive length bonus per token, so no hypothesis that ends
later can score above the running one it extends; ``BatchBeamSearch`` would
only add hypotheses below the n-best list it already has. For a confident CTC
model this ends the search one step after its best hypothesis ends, instead
of the several more that ``end_detect`` waits for (issue 29).

Hypotheses come back as espnet ``Hypothesis`` objects sorted by score (or by
length-normalised score), like ``BeamSearch.forward``'s n-best list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from espnet_serve.backends.ctc_prefix import BatchCTCPrefixScorer, CTCScores, CTCState
from espnet_serve.backends.decoder_step import BatchDecoderStep, KVCache

PRE_BEAM_RATIO = 1.5
# Float32 rounding allowance of :func:`settled`: a later hypothesis must be beaten by this
# much, relative to the scores' magnitude, plus an absolute floor (in nats).
SETTLED_RELATIVE_MARGIN = 1e-3
SETTLED_ABSOLUTE_MARGIN = 1e-2


@dataclass(frozen=True)
class SearchOptions:
    """Beam search settings, with ``Speech2Text``'s meaning.

    Attributes:
        beam_size: Hypotheses kept per utterance.
        ctc_weight: CTC weight; the decoder gets ``1 - ctc_weight``.
        penalty: Length bonus per token.
        lm_weight: Language-model weight (used when the search has a language model).
        maxlenratio: Maximum output length as a ratio of encoder frames
            (0: encoder frames, with end detection; < 0: absolute length).
        minlenratio: Minimum output length, likewise (< 0: absolute).
        normalize_length: Rank ended hypotheses by score per token.
        nbest: Hypotheses returned per utterance.
        sos: Start-of-sentence id.
        eos: End-of-sentence id.
        vocab_size: Output vocabulary size.
        stop_when_settled: Stop an utterance once its n-best list cannot change
            (:func:`settled`; the answer is the same either way, off only to
            measure what it saves).
    """

    beam_size: int
    ctc_weight: float
    penalty: float
    lm_weight: float
    maxlenratio: float
    minlenratio: float
    normalize_length: bool
    nbest: int
    sos: int
    eos: int
    vocab_size: int
    stop_when_settled: bool = True

    @property
    def decoder_weight(self) -> float:
        """Weight of the attention decoder's log probabilities."""
        return 1.0 - self.ctc_weight

    @property
    def pre_beam_size(self) -> int | None:
        """Tokens CTC scores per hypothesis, or ``None`` for the whole vocabulary."""
        size = int(PRE_BEAM_RATIO * self.beam_size)
        if self.ctc_weight == 1.0 or self.ctc_weight == 0.0 or size >= self.vocab_size:
            return None
        return size

    @property
    def scores_only_fall(self) -> bool:
        """Whether extending a hypothesis can never raise its score (so :func:`settled` holds).

        Log probabilities of the decoder, CTC prefixes and language model are at
        most 0; so the score only falls with non-negative weights, a
        non-positive length bonus and ranking by the raw score.
        """
        return (
            not self.normalize_length
            and self.penalty <= 0.0
            and self.lm_weight >= 0.0
            and 0.0 <= self.ctc_weight <= 1.0
        )

    def length_bounds(self, frames: int) -> tuple[int, int]:
        """``(maxlen, minlen)`` for an utterance of ``frames`` encoder frames."""
        if self.maxlenratio == 0:
            maxlen = frames
        elif self.maxlenratio < 0:
            maxlen = -1 * int(self.maxlenratio)
        else:
            maxlen = max(1, int(self.maxlenratio * frames))
        if self.minlenratio < 0:
            minlen = -1 * int(self.minlenratio)
        else:
            minlen = int(self.minlenratio * frames)
        return maxlen, minlen


@dataclass
class _Beams:
    """Running hypotheses (rows) of the utterances still being decoded."""

    utterances: torch.Tensor  # (n_utt,) bucket index of each running utterance (CPU)
    row_utt: torch.Tensor  # (rows,) position of each row's utterance in ``utterances``
    row_slot: torch.Tensor  # (rows,) rank of each row in its utterance's beam
    yseq: torch.Tensor  # (rows, step + 1)
    score: torch.Tensor  # (rows,) weighted score
    scores: dict[str, torch.Tensor]  # per-scorer accumulated scores (rows,)
    decoder_cache: KVCache | None
    ctc_state: CTCState | None
    lm_states: list[Any] | None  # the language model's state of each row, as it returns them


@dataclass(frozen=True)
class _Selection:
    """The new beam of every running utterance: ``n_utt x beam_size`` entries, rank order."""

    parents: torch.Tensor  # row each entry extends
    columns: torch.Tensor  # candidate column of each entry's token
    tokens: torch.Tensor
    score: torch.Tensor
    scores: dict[str, torch.Tensor]


@dataclass(frozen=True)
class _Ended:
    """An ended hypothesis, kept as plain numbers until it makes the n-best list."""

    yseq: list[int]
    score: float  # a float32 value
    scores: dict[str, float]

    def hypothesis(self) -> Any:
        """The espnet ``Hypothesis`` ``BatchBeamSearch`` would return (no scorer states)."""
        from espnet.nets.beam_search import Hypothesis

        return Hypothesis(
            yseq=torch.tensor(self.yseq),
            score=torch.tensor(self.score),
            scores={name: torch.tensor(value) for name, value in self.scores.items()},
        )


class _EndDetector:
    """Incremental espnet ``end_detect`` (its defaults: M = 3, D_end = log(e^-10) = -10).

    ``end_detect(ended, i)`` is true when, for each of the lengths ``i``,
    ``i - 1`` and ``i - 2``, the best ended hypothesis of that length
    (``len(yseq)``, with ``<sos>`` and ``<eos>``) scores more than 10 below the
    best ended hypothesis overall. Only those maxima matter, so they are kept
    per length instead of re-sorting every ended hypothesis at every step.
    """

    M = 3
    D_END = math.log(1 * math.exp(-10))

    def __init__(self) -> None:
        self.best = -math.inf
        self.best_by_length: dict[int, float] = {}

    def add(self, length: int, score: float) -> None:
        """Record an ended hypothesis."""
        self.best = max(self.best, score)
        self.best_by_length[length] = max(self.best_by_length.get(length, -math.inf), score)

    def __call__(self, step: int) -> bool:
        """Whether decoding can stop after ``step``."""
        if not self.best_by_length:
            return False
        return all(
            step - m in self.best_by_length
            and self.best_by_length[step - m] - self.best < self.D_END
            for m in range(self.M)
        )


def settled(ended_scores: list[float], best_running: float, nbest: int) -> bool:
    """Whether no hypothesis that ends later can enter an utterance's n-best list.

    True when the ``nbest``-th best ended score is above the best running score
    by more than float32 rounding could account for. Only valid when
    :attr:`SearchOptions.scores_only_fall`: every later ended hypothesis then
    scores at most the running hypothesis it extends.

    Args:
        ended_scores: Scores of the utterance's ended hypotheses.
        best_running: Best score among its running hypotheses.
        nbest: Hypotheses returned per utterance.
    """
    if len(ended_scores) < nbest:
        return False
    kth = sorted(ended_scores, reverse=True)[nbest - 1]
    margin = SETTLED_ABSOLUTE_MARGIN + SETTLED_RELATIVE_MARGIN * abs(best_running)
    return kth > best_running + margin


def check_lm_supported(lm: Any) -> None:
    """Raise ``NotImplementedError`` unless ``lm`` is one of espnet2's own language models.

    Supported: ``TransformerLM`` and ``SequentialRNNLM``, whose ``batch_score``
    (what ``BatchBeamSearch`` calls) reads only the prefixes and their states, so
    rows of different utterances can share one call.
    """
    from espnet2.lm.seq_rnn_lm import SequentialRNNLM
    from espnet2.lm.transformer_lm import TransformerLM

    if type(lm) not in (TransformerLM, SequentialRNNLM):
        raise NotImplementedError(
            f"BatchedSpeech2Text fuses espnet2's TransformerLM and SequentialRNNLM language "
            f"models; this model has {type(lm).__name__}. Use "
            "espnet2.bin.asr_inference.Speech2Text."
        )


class BatchJointSearch:
    """Joint CTC/attention beam search for a bucket of encoded utterances.

    Args:
        asr_model: The espnet2 ASR model (``decoder``, ``ctc``).
        options: Search settings.
        lm: A language model with espnet's ``batch_score`` (see
            :func:`check_lm_supported`), fused with ``options.lm_weight``; or ``None``.
    """

    def __init__(self, asr_model: Any, options: SearchOptions, lm: Any | None = None) -> None:
        self.asr_model = asr_model
        self.options = options
        self.lm = lm

    def __call__(self, enc: torch.Tensor, lengths: torch.Tensor) -> list[list[Any]]:
        """Decode every utterance of a padded bucket.

        Args:
            enc: Encoder output ``(utterances, frames, dim)``.
            lengths: Valid frames per utterance ``(utterances,)``.

        Returns:
            list[list[Hypothesis]]: The ``nbest`` best ended hypotheses per
            utterance, best first (empty when none ended, as with ``Speech2Text``).
        """
        results = self._search(enc, lengths, self.options)
        # BeamSearch.forward: no ended hypothesis -> retry with a smaller minlenratio.
        options = self.options
        while options.minlenratio >= 0.1:
            retry = [i for i, hyps in enumerate(results) if not hyps]
            if not retry:
                break
            options = replace(options, minlenratio=max(0.0, options.minlenratio - 0.1))
            index = torch.tensor(retry, device=enc.device)
            retried = self._search(enc[index], lengths[index], options)
            for i, hyps in zip(retry, retried, strict=True):
                results[i] = hyps
        return results

    def _search(
        self, enc: torch.Tensor, lengths: torch.Tensor, options: SearchOptions
    ) -> list[list[Any]]:
        """One beam search pass over all utterances (see the module docstring)."""
        device = enc.device
        n_utt = enc.size(0)
        bounds = [options.length_bounds(int(n)) for n in lengths.tolist()]
        maxlen = torch.tensor([b[0] for b in bounds])
        minlen = torch.tensor([b[1] for b in bounds])

        decoder = None
        if options.decoder_weight != 0.0:
            decoder = BatchDecoderStep(self.asr_model.decoder, enc, lengths, options.beam_size)
        ctc = None
        row_utt = torch.arange(n_utt, device=device)
        if options.ctc_weight != 0.0:
            logp = self.asr_model.ctc.log_softmax(enc).float()
            ctc = BatchCTCPrefixScorer(logp, lengths, blank=0, eos=options.eos)
        names = [
            name
            for name, used in (
                ("decoder", decoder is not None),
                ("ctc", ctc is not None),
                ("length_bonus", options.penalty != 0.0),
                ("lm", self.lm is not None),
            )
            if used
        ]
        beams = _Beams(
            utterances=torch.arange(n_utt),
            row_utt=row_utt,
            row_slot=torch.zeros_like(row_utt),
            yseq=torch.full((n_utt, 1), options.sos, dtype=torch.long, device=device),
            score=torch.zeros(n_utt, device=device),
            scores={name: torch.zeros(n_utt, device=device) for name in names},
            decoder_cache=None,
            ctc_state=ctc.initial_state(row_utt) if ctc is not None else None,
            lm_states=[self.lm.init_state(None)] * n_utt if self.lm is not None else None,
        )
        ended: list[list[_Ended]] = [[] for _ in range(n_utt)]
        detectors = [_EndDetector() for _ in range(n_utt)]
        step = 0
        while beams.utterances.numel() > 0:
            new_cache, ctc_scores, lm_states, selection = self._select(beams, step, decoder, ctc)
            done, survivors = self._post_process(
                beams, selection, step, maxlen, minlen, ended, detectors
            )
            beams = self._advance(
                beams, selection, survivors, done, new_cache, ctc_scores, lm_states, decoder, ctc
            )
            step += 1
        return [
            [
                h.hypothesis()
                for h in sorted(hyps, key=self._rank_key, reverse=True)[: options.nbest]
            ]
            for hyps in ended
        ]

    def _rank_key(self, hyp: _Ended) -> float:
        """Ranking of ended hypotheses: score, or score per token with ``normalize_length``.

        In float32, as ``BeamSearch`` ranks its tensor scores.
        """
        if self.options.normalize_length:
            return float(np.float32(hyp.score) / np.float32(len(hyp.yseq) - 1))
        return hyp.score

    def _select(
        self,
        beams: _Beams,
        step: int,
        decoder: BatchDecoderStep | None,
        ctc: BatchCTCPrefixScorer | None,
    ) -> tuple[KVCache | None, CTCScores | None, list[Any] | None, _Selection]:
        """Score every row's extensions and pick each utterance's new beam.

        With a pre-beam, only the pre-beam tokens and ``<eos>`` of each row are
        candidates: ``Speech2Text`` gives every other token a CTC score of
        ``LOGZERO`` (-1e10), so none of them can enter the beam. Candidate
        scores are summed in ``BatchBeamSearch``'s order, so they are the same
        numbers.
        """
        options = self.options
        rows, device = beams.yseq.size(0), beams.yseq.device
        n_utt, slots, vocab = beams.utterances.numel(), options.beam_size, options.vocab_size
        slot_of_row = beams.row_utt * slots + beams.row_slot
        full = torch.zeros(rows, vocab, device=device)  # full scorers, weighted
        local: dict[str, torch.Tensor] = {}
        new_cache = None
        if decoder is not None:
            logp, new_cache = decoder(beams.yseq, beams.decoder_cache, slot_of_row)
            local["decoder"] = logp.float()
            full += options.decoder_weight * local["decoder"]
        if options.penalty != 0.0:
            local["length_bonus"] = torch.ones(1, device=device).expand(rows, vocab)
            full += options.penalty * local["length_bonus"]
        lm_states = None
        if self.lm is not None:
            # espnet's language models ignore ``xs`` (the encoder output): check_lm_supported.
            logp, lm_states = self.lm.batch_score(beams.yseq, beams.lm_states, None)
            local["lm"] = logp.float()
            full += options.lm_weight * local["lm"]
        candidates = None  # token id of each candidate column; None: column == token
        if options.pre_beam_size is not None:
            pre_ids = torch.topk(full, options.pre_beam_size, dim=-1)[1]
            eos = torch.full((rows, 1), options.eos, dtype=torch.long, device=device)
            candidates = torch.cat([pre_ids, eos], dim=1)
            weighted = full.gather(1, candidates)
            duplicate_eos = (pre_ids == options.eos).any(dim=1)
            weighted[:, -1].masked_fill_(duplicate_eos, float("-inf"))
        else:
            weighted = full
        ctc_scores = None
        if ctc is not None:
            assert beams.ctc_state is not None
            scoring_ids = None if candidates is None else candidates[:, :-1]
            ctc_scores = ctc.score(
                beams.ctc_state, beams.yseq[:, -1], step, scoring_ids, beams.row_utt
            )
            local["ctc"] = ctc_scores.local
            weighted += options.ctc_weight * ctc_scores.local
        weighted += beams.score.unsqueeze(1)

        # Each utterance's rows in slot order, padded with -inf to beam_size slots.
        width = weighted.size(1)
        padded = weighted.new_full((n_utt * slots, width), float("-inf"))
        padded[slot_of_row] = weighted
        row_of_slot = torch.zeros(n_utt * slots, dtype=torch.long, device=device)
        row_of_slot[slot_of_row] = torch.arange(rows, device=device)
        top_scores, top_ids = padded.view(n_utt, slots * width).topk(slots, dim=1)
        first_slot = torch.arange(n_utt, device=device)[:, None] * slots
        parents = row_of_slot[torch.div(top_ids, width, rounding_mode="floor") + first_slot]
        parents, columns = parents.view(-1), (top_ids % width).view(-1)
        tokens = columns if candidates is None else candidates[parents, columns]
        scores = {}
        for name, acc in beams.scores.items():
            picked = columns if name == "ctc" else tokens
            scores[name] = acc[parents] + local[name][parents, picked]
        selection = _Selection(parents, columns, tokens, top_scores.view(-1), scores)
        return new_cache, ctc_scores, lm_states, selection

    def _post_process(
        self,
        beams: _Beams,
        selection: _Selection,
        step: int,
        maxlen: torch.Tensor,
        minlen: torch.Tensor,
        ended: list[list[_Ended]],
        detectors: list[_EndDetector],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``BatchBeamSearch.post_process`` and the stop checks.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: Which running utterances are done
            ``(n_utt,)``, and the indices of the selection entries that keep running.
        """
        options = self.options
        slots, utt = options.beam_size, beams.utterances
        last_step = (maxlen[utt] - 1) == step  # (n_utt,)
        tokens = selection.tokens.cpu()
        is_eos = (tokens == options.eos).view(-1, slots) | last_step[:, None]
        kept = [
            (position, position * slots + slot)
            for position, slot in torch.nonzero(is_eos).tolist()
            if step >= int(minlen[utt[position]])
        ]
        if kept:
            entries = torch.tensor([entry for _, entry in kept])
            prefixes = beams.yseq[selection.parents[entries.to(beams.yseq.device)]].tolist()
            appended = tokens[entries].tolist()
            score = selection.score[entries.to(beams.yseq.device)].tolist()
            scores = {k: v[entries.to(v.device)].tolist() for k, v in selection.scores.items()}
            ends = last_step.tolist()
            for i, (position, _) in enumerate(kept):
                seq = [*prefixes[i], appended[i], *([options.eos] if ends[position] else [])]
                hyp = _Ended(seq, score[i], {k: v[i] for k, v in scores.items()})
                original = int(utt[position])
                ended[original].append(hyp)
                detectors[original].add(len(seq), hyp.score)
        done = last_step | is_eos.all(dim=1)
        if options.maxlenratio == 0.0:
            for position, original in enumerate(utt.tolist()):
                if not done[position] and detectors[original](step):
                    done[position] = True
        if options.stop_when_settled and options.scores_only_fall:
            running = selection.score.view(-1, slots).cpu().masked_fill(is_eos, float("-inf"))
            best_running = running.max(dim=1).values.tolist()
            for position, original in enumerate(utt.tolist()):
                scores = [hyp.score for hyp in ended[original]]
                if not done[position] and settled(scores, best_running[position], options.nbest):
                    done[position] = True
        survivors = torch.nonzero((~is_eos & ~done[:, None]).view(-1)).view(-1)
        return done, survivors

    def _advance(
        self,
        beams: _Beams,
        selection: _Selection,
        survivors: torch.Tensor,
        done: torch.Tensor,
        new_cache: KVCache | None,
        ctc_scores: CTCScores | None,
        lm_states: list[Any] | None,
        decoder: BatchDecoderStep | None,
        ctc: BatchCTCPrefixScorer | None,
    ) -> _Beams:
        """The next step's rows: the surviving selection entries; finished utterances dropped."""
        slots, device = self.options.beam_size, beams.yseq.device
        keep = survivors.to(device)
        parents, tokens = selection.parents[keep], selection.tokens[keep]
        row_utt = torch.div(keep, slots, rounding_mode="floor")
        utterances = beams.utterances
        ctc_state = (
            None if ctc_scores is None else ctc.select(ctc_scores, parents, selection.columns[keep])
        )
        if bool(done.any()):
            kept = torch.nonzero(~done).view(-1)
            position = torch.cumsum(~done, 0) - 1  # old utterance position -> new one
            row_utt = position.to(device)[row_utt]
            utterances = utterances[kept]
            if kept.numel() > 0:
                if decoder is not None:
                    decoder.keep(kept.to(device))
                if ctc is not None and ctc_state is not None:
                    ctc_state = ctc.keep(kept.to(device), ctc_state)
        return _Beams(
            utterances=utterances,
            row_utt=row_utt,
            row_slot=keep % slots,
            yseq=torch.cat([beams.yseq[parents], tokens[:, None]], dim=1),
            score=selection.score[keep],
            scores={name: value[keep] for name, value in selection.scores.items()},
            decoder_cache=None
            if new_cache is None
            else BatchDecoderStep.reorder(new_cache, parents),
            ctc_state=ctc_state,
            lm_states=None if lm_states is None else [lm_states[p] for p in parents.tolist()],
        )
