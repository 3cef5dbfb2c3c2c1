"""Greedy CTC decoding of a padded batch: best token per frame, repeats merged, blanks dropped."""

from __future__ import annotations

from typing import Any

import torch


def greedy_ctc(
    asr_model: Any, enc: torch.Tensor, lengths: torch.Tensor, sos: int, eos: int
) -> list[list[Any]]:
    """Decode each utterance with the CTC head's best path.

    Args:
        asr_model: The espnet2 ASR model (``ctc``).
        enc: Encoder output ``(utterances, frames, dim)``.
        lengths: Valid frames per utterance ``(utterances,)``.
        sos: Start-of-sentence id (first ``yseq`` entry, as in beam search).
        eos: End-of-sentence id (last ``yseq`` entry).

    Returns:
        list[list[Hypothesis]]: One hypothesis per utterance (a one-item n-best
        list); ``score`` and ``scores["ctc"]`` are the best path's log probability.
    """
    from espnet.nets.beam_search import Hypothesis

    best, ids = asr_model.ctc.log_softmax(enc).float().max(dim=-1)
    best, ids = best.cpu(), ids.cpu()
    results = []
    for row, length in enumerate(lengths.tolist()):
        path = torch.unique_consecutive(ids[row, :length])
        tokens = path[path != 0]
        score = best[row, :length].sum()
        yseq = torch.cat([torch.tensor([sos]), tokens, torch.tensor([eos])])
        results.append([Hypothesis(yseq=yseq, score=score, scores={"ctc": score})])
    return results
