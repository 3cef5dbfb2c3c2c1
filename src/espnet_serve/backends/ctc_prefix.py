"""CTC prefix scores for many utterances x beam slots at once.

The arithmetic is that of ``espnet.nets.ctc_prefix_score.CTCPrefixScoreTH``
(Watanabe et al. 2017, Algorithm 2; Seki et al. 2019), which ``Speech2Text``
uses through ``CTCPrefixScorer``, step for step (scores agree to float
rounding, ~1e-7). What changes is bookkeeping: the per-hypothesis Python loops
of ``CTCPrefixScoreTH`` are vectorised; every utterance has a fixed number of
beam slots (rows ``utterance * slots + slot``); scores come back for the scored
tokens only (plus ``<eos>``) instead of as a ``(rows, vocab)`` matrix that is
``LOGZERO`` elsewhere; rows (running hypotheses) name their utterance, so
utterances can have different numbers of them; and finished utterances (and
the frames past the longest remaining one) are dropped.
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
class CTCScores:
    """One scoring step's results.

    Attributes:
        local: Prefix score of each extension minus the prefix's, for the
            scored tokens and then ``<eos>``: ``(rows, scored + 1)``; with no
            ``scoring_ids``, ``(rows, vocab)`` indexed by token.
        forward: Forward log probabilities per (row, scored token),
            ``(frames, 3, rows, scored)``: ``[:, 0]`` ends in blank, ``[:, 1]``
            in the token (``[:, 2]`` is scratch).
        psi: Prefix scores, same layout as ``local``.
    """

    local: torch.Tensor
    forward: torch.Tensor
    psi: torch.Tensor


class BatchCTCPrefixScorer:
    """Vectorised CTC prefix scoring of running hypotheses (rows) of many utterances.

    Args:
        logp: CTC log posteriors ``(utterances, frames, vocab)`` (padded).
        lengths: Valid frames per utterance ``(utterances,)``.
        blank: Blank token id.
        eos: End-of-sentence token id.
    """

    def __init__(self, logp: torch.Tensor, lengths: torch.Tensor, blank: int, eos: int) -> None:
        self.blank = blank
        self.eos = eos
        self.vocab = logp.size(2)
        self.lengths = lengths.to(logp.device)
        x = logp.clone()
        padded = torch.arange(x.size(1), device=x.device)[None, :] >= self.lengths[:, None]
        x.masked_fill_(padded.unsqueeze(-1), LOGZERO)
        x[..., blank].masked_fill_(padded, 0.0)
        self.x = x.transpose(0, 1).contiguous()  # (frames, utterances, vocab)

    def initial_state(self, row_utt: torch.Tensor) -> CTCState:
        """State of the empty prefix (``<sos>``) in rows of the given utterances."""
        r = torch.full(
            (self.x.size(0), 2, row_utt.numel()), LOGZERO, dtype=self.x.dtype, device=self.x.device
        )
        r[:, 1] = torch.cumsum(self.x[:, :, self.blank], 0)[:, row_utt]
        return CTCState(r=r, s=0.0)

    def score(
        self,
        state: CTCState,
        last_tokens: torch.Tensor,
        output_length: int,
        scoring_ids: torch.Tensor | None,
        row_utt: torch.Tensor,
    ) -> CTCScores:
        """Score every row's prefix extended by each scored token and by ``<eos>``.

        Args:
            state: Current state (:meth:`initial_state` or :meth:`select`).
            last_tokens: Last token of each row's prefix ``(rows,)``.
            output_length: Prefix length without ``<sos>`` (same in every row).
            scoring_ids: Tokens to score per row ``(rows, scored)`` (the
                pre-beam), or ``None`` for the whole vocabulary.
            row_utt: Utterance of each row ``(rows,)``.

        Returns:
            CTCScores: The step's scores (``<eos>`` scored at the end of the
            utterance, blank at ``LOGZERO``, as ``CTCPrefixScoreTH`` does).
        """
        frames, rows = self.x.size(0), row_utt.numel()
        device, dtype = self.x.device, self.x.dtype
        row_ids = torch.arange(rows, device=device)
        utt_of_row = row_utt
        r_prev, s_prev = state.r, state.s
        if scoring_ids is not None:
            snum = scoring_ids.size(-1)
            flat_ids = (scoring_ids + (utt_of_row * self.vocab)[:, None]).view(-1)
            x_token = torch.index_select(self.x.view(frames, -1), 1, flat_ids)
            x_token = x_token.view(frames, rows, snum)
        else:
            snum = self.vocab
            x_token = self.x[:, utt_of_row]  # (frames, rows, vocab)
        x_blank = self.x[:, utt_of_row, self.blank].unsqueeze(-1).expand(-1, -1, snum)

        r_sum = torch.logsumexp(r_prev, 1)  # (frames, rows)
        log_phi = r_sum.unsqueeze(2).repeat(1, 1, snum)
        if scoring_ids is not None:
            hit_row, hit_col = torch.nonzero(scoring_ids == last_tokens[:, None], as_tuple=True)
            log_phi[:, hit_row, hit_col] = r_prev[:, 1, hit_row]
        else:
            log_phi[:, row_ids, last_tokens] = r_prev[:, 1, :]

        # forward[t] = (r^b_t, r^n_t, phi_t): one logaddexp of r^n_{t-1} with the
        # strided pair (r^b_{t-1}, phi_{t-1}) gives (r^b_t, r^n_t) before adding
        # the frame's (blank, token) log probabilities. CTCPrefixScoreTH computes
        # the same values as logsumexp over stacked pairs (ten small kernels per
        # frame where these are two).
        forward = torch.full((frames, 3, rows, snum), LOGZERO, dtype=dtype, device=device)
        forward[:, 2] = log_phi
        if output_length == 0:
            forward[0, 1] = x_token[0]
        emissions = torch.stack([x_blank, x_token], dim=1).unbind(0)  # (2, rows, snum) per frame
        start = max(output_length, 1)
        # Views made once (unbind) keep the per-frame loop at two kernels and no indexing.
        non_blank = forward[:, 1:2].unbind(0)
        pairs = forward[:, 0::2].unbind(0)
        outputs = forward[:, 0:2].unbind(0)
        for t in range(start, frames):
            torch.logaddexp(non_blank[t - 1], pairs[t - 1], out=outputs[t])
            outputs[t].add_(emissions[t])

        log_phi_x = torch.cat((log_phi[0].unsqueeze(0), log_phi[:-1]), dim=0) + x_token
        psi = torch.logsumexp(
            torch.cat((log_phi_x[start:frames], forward[start - 1, 1].unsqueeze(0)), dim=0), dim=0
        )
        end_frames = self.lengths[row_utt] - 1
        psi_eos = r_sum[end_frames, row_ids]
        if scoring_ids is not None:
            psi = torch.where(scoring_ids == self.eos, psi_eos[:, None], psi)
            if self.eos != self.blank:
                psi = psi.masked_fill(scoring_ids == self.blank, LOGZERO)
            psi = torch.cat([psi, psi_eos[:, None]], dim=1)
        else:
            psi[:, self.eos] = psi_eos
            if self.eos != self.blank:
                psi[:, self.blank] = LOGZERO
        return CTCScores(local=psi - s_prev, forward=forward, psi=psi)

    def select(self, scores: CTCScores, parents: torch.Tensor, columns: torch.Tensor) -> CTCState:
        """State of each new row: its parent row's prefix extended by a scored token.

        Args:
            scores: The step's scores from :meth:`score`.
            parents: Parent row of every new row ``(rows,)``.
            columns: Column of the appended token in ``scores.local`` ``(rows,)``
                (the ``<eos>`` column gets an arbitrary state: such rows end).

        Returns:
            CTCState: The new rows' state.
        """
        forward = scores.forward
        column = columns.clamp(max=forward.size(-1) - 1)
        r_new = torch.stack([forward[:, 1, parents, column], forward[:, 0, parents, column]], 1)
        return CTCState(r=r_new, s=scores.psi[parents, columns].unsqueeze(1))

    def keep(self, utterances: torch.Tensor, state: CTCState) -> CTCState:
        """Drop every utterance not in ``utterances`` and the frames past the longest kept one.

        Args:
            utterances: Indices of the utterances to keep, in order (their rows
                are the caller's to select).
            state: The current state, rows already restricted to those utterances.

        Returns:
            CTCState: ``state`` without the dropped frames.
        """
        self.lengths = self.lengths[utterances]
        frames = int(self.lengths.max())
        self.x = self.x[:frames, utterances]
        return CTCState(r=state.r[:frames], s=state.s)
