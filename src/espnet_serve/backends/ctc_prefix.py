"""CTC prefix scores for many utterances x beam slots at once.

The arithmetic is that of ``espnet.nets.ctc_prefix_score.CTCPrefixScoreTH``
(Watanabe et al. 2017, Algorithm 2; Seki et al. 2019), which ``Speech2Text``
uses through ``CTCPrefixScorer``, step for step (scores agree to float
rounding, ~1e-7). What changes is bookkeeping: the per-hypothesis Python loops
of ``CTCPrefixScoreTH`` are vectorised, every utterance has a fixed number of
beam slots (rows ``utterance * slots + slot``), state selection takes
(parent row, token) pairs, and finished utterances (and the frames past the
longest remaining one) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOGZERO = -10000000000.0


@dataclass(frozen=True)
class CTCState:
    """Prefix state of every row.

    Attributes:
        r: Forward log probabilities of each row's prefix ending in a
            non-blank (``[:, 0]``) or blank (``[:, 1]``), ``(frames, 2, rows)``.
        s: Log prefix score of each row, ``(rows, 1)`` (a float before the first step).
    """

    r: torch.Tensor
    s: torch.Tensor | float


@dataclass(frozen=True)
class CTCCandidates:
    """Everything one scoring step computed, for selecting the next state.

    Attributes:
        r: Forward log probabilities of every (row, scored token), ``(frames, 2, rows, scored)``.
        log_psi: Prefix scores of every (row, token), ``(rows, vocab)``.
        token_column: Column of each token in ``r`` per row, -1 when not scored
            (``None`` when every token was scored).
    """

    r: torch.Tensor
    log_psi: torch.Tensor
    token_column: torch.Tensor | None


class BatchCTCPrefixScorer:
    """Vectorised CTC prefix scoring over ``utterances x slots`` rows.

    Args:
        logp: CTC log posteriors ``(utterances, frames, vocab)`` (padded).
        lengths: Valid frames per utterance ``(utterances,)``.
        slots: Beam slots per utterance.
        blank: Blank token id.
        eos: End-of-sentence token id.
    """

    def __init__(
        self, logp: torch.Tensor, lengths: torch.Tensor, slots: int, blank: int, eos: int
    ) -> None:
        self.blank = blank
        self.eos = eos
        self.slots = slots
        self.vocab = logp.size(2)
        self.lengths = lengths.to(logp.device)
        x = logp.clone()
        padded = torch.arange(x.size(1), device=x.device)[None, :] >= self.lengths[:, None]
        x.masked_fill_(padded.unsqueeze(-1), LOGZERO)
        x[..., blank].masked_fill_(padded, 0.0)
        xn = x.transpose(0, 1)  # (frames, utterances, vocab)
        xb = xn[:, :, blank].unsqueeze(2).expand(-1, -1, self.vocab)
        self.x = torch.stack([xn, xb])  # (2, frames, utterances, vocab)

    @property
    def rows(self) -> int:
        """Number of rows (utterances x slots)."""
        return self.x.size(2) * self.slots

    def initial_state(self) -> CTCState:
        """State of the empty prefix (``<sos>``) in every row."""
        frames, n_utt = self.x.size(1), self.x.size(2)
        r = torch.full(
            (frames, 2, n_utt, self.slots), LOGZERO, dtype=self.x.dtype, device=self.x.device
        )
        r[:, 1] = torch.cumsum(self.x[0, :, :, self.blank], 0).unsqueeze(2)
        return CTCState(r=r.view(-1, 2, n_utt * self.slots), s=0.0)

    def score(
        self,
        state: CTCState,
        last_tokens: torch.Tensor,
        output_length: int,
        scoring_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, CTCCandidates]:
        """Score every row's prefix extended by each token.

        Args:
            state: Current state (:meth:`initial_state` or :meth:`select`).
            last_tokens: Last token of each row's prefix ``(rows,)``.
            output_length: Prefix length without ``<sos>`` (same in every row).
            scoring_ids: Tokens to score per row ``(rows, scored)`` (pre-beam),
                or ``None`` for the whole vocabulary. Others get ``LOGZERO``;
                ``<eos>`` is always scored.

        Returns:
            tuple[torch.Tensor, CTCCandidates]: Local scores (prefix score of
            the extension minus that of the prefix) ``(rows, vocab)``, and the
            step's candidates for :meth:`select`.
        """
        frames, rows = self.x.size(1), self.rows
        device, dtype = self.x.device, self.x.dtype
        row_ids = torch.arange(rows, device=device)
        utt_of_row = torch.div(row_ids, self.slots, rounding_mode="floor")
        r_prev, s_prev = state.r, state.s
        if scoring_ids is not None:
            snum = scoring_ids.size(-1)
            token_column = torch.full((rows, self.vocab), -1, dtype=torch.long, device=device)
            token_column[row_ids[:, None], scoring_ids] = torch.arange(snum, device=device)
            flat_ids = (scoring_ids + (utt_of_row * self.vocab)[:, None]).view(-1)
            x_ = torch.index_select(self.x.reshape(2, frames, -1), 2, flat_ids)
            x_ = x_.view(2, frames, rows, snum)
        else:
            snum = self.vocab
            token_column = None
            x_ = self.x[:, :, utt_of_row]

        r = torch.full((frames, 2, rows, snum), LOGZERO, dtype=dtype, device=device)
        if output_length == 0:
            r[0, 0] = x_[0, 0]
        r_sum = torch.logsumexp(r_prev, 1)  # (frames, rows)
        log_phi = r_sum.unsqueeze(2).repeat(1, 1, snum)
        if token_column is not None:
            column = token_column[row_ids, last_tokens]
            hit = torch.nonzero(column >= 0).view(-1)
            log_phi[:, hit, column[hit]] = r_prev[:, 1, hit]
        else:
            log_phi[:, row_ids, last_tokens] = r_prev[:, 1, :]

        start = max(output_length, 1)
        # r^n_t = logaddexp(r^n_{t-1}, phi_{t-1}) + x_t; r^b_t = logaddexp(r^n_{t-1}, r^b_{t-1})
        # + blank_t. CTCPrefixScoreTH takes logsumexp over a stacked pair: the same
        # value, but ten small kernels (and thread wake-ups) where these are three.
        for t in range(start, frames):
            rp = r[t - 1]
            torch.logaddexp(rp[0], log_phi[t - 1], out=r[t, 0])
            torch.logaddexp(rp[0], rp[1], out=r[t, 1])
            r[t].add_(x_[:, t])

        log_phi_x = torch.cat((log_phi[0].unsqueeze(0), log_phi[:-1]), dim=0) + x_[0]
        psi = torch.logsumexp(
            torch.cat((log_phi_x[start:frames], r[start - 1, 0].unsqueeze(0)), dim=0), dim=0
        )
        if scoring_ids is not None:
            log_psi = torch.full((rows, self.vocab), LOGZERO, dtype=dtype, device=device)
            log_psi.scatter_(1, scoring_ids, psi)
        else:
            log_psi = psi
        end_frames = (self.lengths - 1).repeat_interleave(self.slots)
        log_psi[:, self.eos] = r_sum[end_frames, row_ids]
        if self.eos != self.blank:
            log_psi[:, self.blank] = LOGZERO
        return log_psi - s_prev, CTCCandidates(r=r, log_psi=log_psi, token_column=token_column)

    def select(
        self, candidates: CTCCandidates, parents: torch.Tensor, tokens: torch.Tensor
    ) -> CTCState:
        """State of each new row: its parent row's prefix extended by its token.

        Args:
            candidates: The step's candidates from :meth:`score`.
            parents: Parent row of every new row ``(rows,)``.
            tokens: Token appended in every new row ``(rows,)``.

        Returns:
            CTCState: The new rows' state.
        """
        r, log_psi = candidates.r, candidates.log_psi
        if candidates.token_column is None:
            column = tokens
        else:
            column = candidates.token_column[parents, tokens].clamp(min=0)
        r_new = r[:, :, parents, column]
        return CTCState(r=r_new, s=log_psi[parents, tokens].unsqueeze(1))

    def keep(self, utterances: torch.Tensor, state: CTCState) -> CTCState:
        """Drop every utterance not in ``utterances`` (and frames past the longest kept one).

        Args:
            utterances: Indices of the utterances to keep, in order.
            state: The current state.

        Returns:
            CTCState: ``state`` restricted to the kept utterances' rows.
        """
        self.lengths = self.lengths[utterances]
        frames = int(self.lengths.max())
        self.x = self.x[:, :frames, utterances]
        slot_ids = torch.arange(self.slots, device=utterances.device)
        rows = (utterances[:, None] * self.slots + slot_ids).view(-1)
        s = state.s[rows] if isinstance(state.s, torch.Tensor) else state.s
        return CTCState(r=state.r[:frames, :, rows], s=s)
