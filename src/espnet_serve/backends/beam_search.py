"""Joint CTC/attention beam search vectorised across utterances x beams.

Reproduces ``espnet.nets.batch_beam_search.BatchBeamSearch`` as
``Speech2Text`` configures it (scorers ``decoder``, ``ctc`` as a partial
scorer, ``length_bonus``; ``pre_beam_score_key="full"`` unless CTC only), for
every utterance of a bucket at once. Each utterance owns ``beam_size`` slots;
a slot whose hypothesis ended (or, at the first step, was never filled) is
inactive: its running score is ``-inf`` so it never wins a place in the beam.
Per utterance and step, as in ``BatchBeamSearch``:

- weighted scores = ``(1 - ctc_weight) * decoder + penalty`` (full scorers),
  pre-beam = top ``int(1.5 * beam_size)`` of those per slot, then
  ``+ ctc_weight * ctc`` (CTC prefix scores of the pre-beam tokens and
  ``<eos>``), then ``+`` the slot's running score;
- the best ``beam_size`` (slot, token) pairs over all slots become the new slots,
  in score order;
- at the utterance's last step (``maxlen - 1``) ``<eos>`` is appended to every
  hypothesis; hypotheses ending in ``<eos>`` end, and are kept if the step is
  at least ``minlen``;
- with ``maxlenratio == 0`` espnet's ``end_detect`` may stop the utterance;
  it also stops when no slot is active. Finished utterances leave the batch.

Hypotheses come back as espnet ``Hypothesis`` objects sorted by score (or by
length-normalised score), like ``BeamSearch.forward``'s n-best list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from espnet_serve.backends.ctc_prefix import BatchCTCPrefixScorer, CTCState
from espnet_serve.backends.decoder_step import BatchDecoderStep, KVCache

PRE_BEAM_RATIO = 1.5


@dataclass(frozen=True)
class SearchOptions:
    """Beam search settings, with ``Speech2Text``'s meaning.

    Attributes:
        beam_size: Hypotheses kept per utterance.
        ctc_weight: CTC weight; the decoder gets ``1 - ctc_weight``.
        penalty: Length bonus per token.
        maxlenratio: Maximum output length as a ratio of encoder frames
            (0: encoder frames, with end detection; < 0: absolute length).
        minlenratio: Minimum output length, likewise (< 0: absolute).
        normalize_length: Rank ended hypotheses by score per token.
        sos: Start-of-sentence id.
        eos: End-of-sentence id.
        vocab_size: Output vocabulary size.
    """

    beam_size: int
    ctc_weight: float
    penalty: float
    maxlenratio: float
    minlenratio: float
    normalize_length: bool
    sos: int
    eos: int
    vocab_size: int

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
    """Running state of every slot of the utterances still being decoded."""

    utterances: torch.Tensor  # (n_utt,) index of each utterance in the bucket
    yseq: torch.Tensor  # (rows, step + 1)
    score: torch.Tensor  # (rows,) running weighted score, -inf when inactive
    scores: dict[str, torch.Tensor]  # per-scorer accumulated scores (rows,)
    decoder_cache: KVCache | None
    ctc_state: CTCState | None


def _rows_of(utterances: torch.Tensor, slots: int) -> torch.Tensor:
    """Row indices of the given utterance positions."""
    return (utterances[:, None] * slots + torch.arange(slots, device=utterances.device)).view(-1)


def _hypothesis(yseq: torch.Tensor, score: torch.Tensor, scores: dict[str, torch.Tensor]) -> Any:
    """An espnet ``Hypothesis`` as ``BatchBeamSearch`` returns it (no scorer states)."""
    from espnet.nets.beam_search import Hypothesis

    return Hypothesis(yseq=yseq, score=score, scores=scores)


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


class BatchJointSearch:
    """Joint CTC/attention beam search for a bucket of encoded utterances.

    Args:
        asr_model: The espnet2 ASR model (``decoder``, ``ctc``).
        options: Search settings.
    """

    def __init__(self, asr_model: Any, options: SearchOptions) -> None:
        self.asr_model = asr_model
        self.options = options

    def __call__(self, enc: torch.Tensor, lengths: torch.Tensor) -> list[list[Any]]:
        """Decode every utterance of a padded bucket.

        Args:
            enc: Encoder output ``(utterances, frames, dim)``.
            lengths: Valid frames per utterance ``(utterances,)``.

        Returns:
            list[list[Hypothesis]]: Ended hypotheses per utterance, best first
            (empty when none ended, as with ``Speech2Text``).
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
        n_utt, slots = enc.size(0), options.beam_size
        bounds = [options.length_bounds(int(n)) for n in lengths.tolist()]
        maxlen = torch.tensor([b[0] for b in bounds])
        minlen = torch.tensor([b[1] for b in bounds])

        decoder = None
        if options.decoder_weight != 0.0:
            decoder = BatchDecoderStep(self.asr_model.decoder, enc, lengths, slots)
        ctc = None
        if options.ctc_weight != 0.0:
            logp = self.asr_model.ctc.log_softmax(enc).float()
            ctc = BatchCTCPrefixScorer(logp, lengths, slots, blank=0, eos=options.eos)
        names = [
            name
            for name, used in (
                ("decoder", decoder is not None),
                ("ctc", ctc is not None),
                ("length_bonus", options.penalty != 0.0),
            )
            if used
        ]
        rows = n_utt * slots
        score = torch.full((n_utt, slots), float("-inf"), device=device)
        score[:, 0] = 0.0
        beams = _Beams(
            utterances=torch.arange(n_utt),
            yseq=torch.full((rows, 1), options.sos, dtype=torch.long, device=device),
            score=score.view(-1),
            scores={name: torch.zeros(rows, device=device) for name in names},
            decoder_cache=None,
            ctc_state=ctc.initial_state() if ctc is not None else None,
        )
        ended: list[list[Any]] = [[] for _ in range(n_utt)]
        detectors = [_EndDetector() for _ in range(n_utt)]
        step = 0
        while beams.utterances.numel() > 0:
            beams = self._step(beams, step, decoder, ctc, options)
            done = self._collect_ended(beams, step, maxlen, minlen, ended, detectors, options)
            if bool(done.any()):
                keep = torch.nonzero(~done).view(-1)
                beams = self._keep(beams, keep, decoder, ctc)
            step += 1
        return [sorted(hyps, key=self._rank_key, reverse=True) for hyps in ended]

    def _rank_key(self, hyp: Any) -> Any:
        """Ranking of ended hypotheses: score, or score per token with ``normalize_length``."""
        if self.options.normalize_length:
            return hyp.score / (len(hyp.yseq) - 1)
        return hyp.score

    def _step(
        self,
        beams: _Beams,
        step: int,
        decoder: BatchDecoderStep | None,
        ctc: BatchCTCPrefixScorer | None,
        options: SearchOptions,
    ) -> _Beams:
        """Score every slot's extensions and pick each utterance's new beam.

        With a pre-beam, only the pre-beam tokens and ``<eos>`` of each slot are
        candidates: ``Speech2Text`` gives every other token a CTC score of
        ``LOGZERO`` (-1e10), so none of them can enter the beam. Candidate
        scores are summed in ``BatchBeamSearch``'s order, so they are the same
        numbers.
        """
        rows, device = beams.yseq.size(0), beams.yseq.device
        n_utt, slots, vocab = rows // options.beam_size, options.beam_size, options.vocab_size
        full = torch.zeros(rows, vocab, device=device)  # full scorers, weighted
        local: dict[str, torch.Tensor] = {}
        new_cache = None
        if decoder is not None:
            logp, new_cache = decoder(beams.yseq, beams.decoder_cache)
            local["decoder"] = logp.float()
            full += options.decoder_weight * local["decoder"]
        if options.penalty != 0.0:
            full += options.penalty * torch.ones(1, device=device).expand(rows, vocab)
        pre_beam = options.pre_beam_size
        candidates = None  # token id of each candidate column, None: column == token
        ctc_scores = None
        if pre_beam is not None:
            pre_ids = torch.topk(full, pre_beam, dim=-1)[1]
            eos = torch.full((rows, 1), options.eos, dtype=torch.long, device=device)
            candidates = torch.cat([pre_ids, eos], dim=1)
            weighted = full.gather(1, candidates)
            duplicate_eos = (pre_ids == options.eos).any(dim=1)
            weighted[:, -1].masked_fill_(duplicate_eos, float("-inf"))
        else:
            weighted = full
        if ctc is not None:
            assert beams.ctc_state is not None
            scoring_ids = None if candidates is None else candidates[:, :-1]
            ctc_scores = ctc.score(beams.ctc_state, beams.yseq[:, -1], step, scoring_ids)
            weighted += options.ctc_weight * ctc_scores.local
        weighted += beams.score.unsqueeze(1)

        width = weighted.size(1)
        top_scores, top_ids = weighted.view(n_utt, slots * width).topk(slots, dim=1)
        first_row = torch.arange(n_utt, device=device)[:, None] * slots
        parents = (torch.div(top_ids, width, rounding_mode="floor") + first_row).view(-1)
        columns = (top_ids % width).view(-1)
        tokens = columns if candidates is None else candidates[parents, columns]
        if options.penalty != 0.0:
            local["length_bonus"] = torch.ones(rows, vocab, device=device)
        accumulated = {}
        for name, acc in beams.scores.items():
            if name == "ctc":
                assert ctc_scores is not None
                accumulated[name] = acc[parents] + ctc_scores.local[parents, columns]
            else:
                accumulated[name] = acc[parents] + local[name][parents, tokens]
        return _Beams(
            utterances=beams.utterances,
            yseq=torch.cat([beams.yseq[parents], tokens[:, None]], dim=1),
            score=top_scores.view(-1),
            scores=accumulated,
            decoder_cache=None if new_cache is None else decoder.reorder(new_cache, parents),
            ctc_state=None if ctc_scores is None else ctc.select(ctc_scores, parents, columns),
        )

    def _collect_ended(
        self,
        beams: _Beams,
        step: int,
        maxlen: torch.Tensor,
        minlen: torch.Tensor,
        ended: list[list[Any]],
        detectors: list[_EndDetector],
        options: SearchOptions,
    ) -> torch.Tensor:
        """Apply ``BatchBeamSearch.post_process`` and the stop checks.

        Returns:
            torch.Tensor: Which of the running utterances are done ``(n_utt,)``.
        """
        slots = options.beam_size
        utt = beams.utterances
        last_step = (maxlen[utt] - 1) == step  # (n_utt,)
        is_eos = (beams.yseq[:, -1] == options.eos).cpu().view(-1, slots) | last_step[:, None]
        finished = torch.nonzero(is_eos).tolist()
        if finished:
            yseq, score = beams.yseq.cpu(), beams.score.to("cpu", copy=True)
            scores = {name: value.cpu() for name, value in beams.scores.items()}
            eos = torch.tensor([options.eos])
            for position, slot in finished:
                original = int(utt[position])
                if step < int(minlen[original]):
                    continue
                row = position * slots + slot
                seq = torch.cat([yseq[row], eos]) if bool(last_step[position]) else yseq[row]
                hyp = _hypothesis(seq, score[row], {k: v[row] for k, v in scores.items()})
                ended[original].append(hyp)
                detectors[original].add(len(seq), float(hyp.score))
            beams.score.view(-1, slots)[is_eos.to(beams.score.device)] = float("-inf")
        done = last_step | is_eos.all(dim=1)
        if options.maxlenratio == 0.0:
            for position, original in enumerate(utt.tolist()):
                if not done[position] and detectors[original](step):
                    done[position] = True
        return done

    @staticmethod
    def _keep(
        beams: _Beams,
        keep: torch.Tensor,
        decoder: BatchDecoderStep | None,
        ctc: BatchCTCPrefixScorer | None,
    ) -> _Beams:
        """Drop finished utterances from the running state, the decoder and the CTC scorer."""
        device = beams.yseq.device
        slots = beams.yseq.size(0) // beams.utterances.numel()
        rows = _rows_of(keep.to(device), slots)
        if decoder is not None:
            decoder.keep(keep.to(device))
        ctc_state = beams.ctc_state
        if ctc is not None and ctc_state is not None and keep.numel() > 0:
            ctc_state = ctc.keep(keep.to(device), ctc_state)
        cache = beams.decoder_cache
        return _Beams(
            utterances=beams.utterances[keep],
            yseq=beams.yseq[rows],
            score=beams.score[rows],
            scores={name: value[rows] for name, value in beams.scores.items()},
            decoder_cache=None if cache is None else BatchDecoderStep.reorder(cache, rows),
            ctc_state=ctc_state,
        )
