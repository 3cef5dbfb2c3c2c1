"""One decoding step of an espnet2 transformer decoder for many utterances x beams.

``TransformerDecoder.batch_score`` (what ``Speech2Text`` calls) re-runs self
attention's key/value projections over the whole prefix at every step, and
projects the encoder output to source-attention keys and values again at every
step and for every hypothesis. Here each layer keeps its self-attention keys
and values (one new position per step), source keys and values are projected
once per utterance, and the hypotheses (rows) of an utterance attend to them
together, as extra queries in its beam slots. The arithmetic per position is
``DecoderLayer.forward``'s with a cache, using the decoder's own modules.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Per layer: self-attention keys and values of the prefix, (rows, heads, length, d_k) each.
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


def check_decoder_supported(decoder: Any) -> None:
    """Raise ``NotImplementedError`` unless ``decoder`` is a plain espnet2 transformer decoder.

    Supported: ``BaseTransformerDecoder`` subclasses that keep its
    ``forward_one_step`` and whose layers are ``DecoderLayer`` with standard
    multi-head self and source attention (e.g. ``TransformerDecoder``).
    """
    from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
    from espnet.nets.pytorch_backend.transformer.decoder_layer import DecoderLayer
    from espnet2.asr.decoder.transformer_decoder import BaseTransformerDecoder

    supported = (
        isinstance(decoder, BaseTransformerDecoder)
        and type(decoder).forward_one_step is BaseTransformerDecoder.forward_one_step
        and all(
            isinstance(layer, DecoderLayer)
            and layer.sequential_attn is None
            and type(layer.self_attn) is MultiHeadedAttention
            and type(layer.src_attn) is MultiHeadedAttention
            for layer in decoder.decoders
        )
    )
    if not supported:
        raise NotImplementedError(
            f"BatchedSpeech2Text supports espnet2 transformer attention decoders; this model "
            f"has {type(decoder).__name__}. Use ctc_weight=1.0 (CTC only) or "
            "espnet2.bin.asr_inference.Speech2Text."
        )


def _heads(attn: nn.Module, x: torch.Tensor, rows: int) -> torch.Tensor:
    """``(rows, length, dim)`` -> ``(rows, heads, length, d_k)``."""
    return x.view(rows, -1, attn.h, attn.d_k).transpose(1, 2)


class BatchDecoderStep:
    """Cached source attention and one-step scoring for a bucket of utterances.

    Args:
        decoder: A supported espnet2 transformer decoder (see :func:`check_decoder_supported`).
        memory: Encoder output ``(utterances, frames, dim)``.
        lengths: Valid frames per utterance ``(utterances,)``.
        slots: Beam slots per utterance.
    """

    def __init__(
        self, decoder: Any, memory: torch.Tensor, lengths: torch.Tensor, slots: int
    ) -> None:
        self.decoder = decoder
        self.slots = slots
        frames = torch.arange(memory.size(1), device=memory.device)
        padded = frames[None, :] >= lengths.to(memory.device)[:, None]
        self.padding_bias = torch.zeros(padded.shape, dtype=memory.dtype, device=memory.device)
        self.padding_bias.masked_fill_(padded, torch.finfo(memory.dtype).min)
        self.padding_bias = self.padding_bias[:, None, None, :]  # (utterances, 1, 1, frames)
        n_utt = memory.size(0)
        self.keys: list[
            torch.Tensor
        ] = []  # source keys, transposed: (utterances, heads, d_k, frames)
        self.values: list[torch.Tensor] = []  # (utterances, heads, frames, d_k)
        self.qkv: list[tuple[torch.Tensor, torch.Tensor]] = []  # fused self-attention projection
        for layer in decoder.decoders:
            attn = layer.src_attn
            keys = attn.k_norm(_heads(attn, attn.linear_k(memory), n_utt))
            self.keys.append(keys.transpose(-2, -1).contiguous())
            self.values.append(_heads(attn, attn.linear_v(memory), n_utt))
            own = layer.self_attn
            weight = torch.cat([own.linear_q.weight, own.linear_k.weight, own.linear_v.weight])
            bias = torch.cat([own.linear_q.bias, own.linear_k.bias, own.linear_v.bias])
            self.qkv.append((weight, bias))

    def keep(self, utterances: torch.Tensor) -> None:
        """Drop every utterance not in ``utterances``."""
        self.padding_bias = self.padding_bias[utterances]
        self.keys = [k[utterances] for k in self.keys]
        self.values = [v[utterances] for v in self.values]

    @staticmethod
    def reorder(cache: KVCache, rows: torch.Tensor) -> KVCache:
        """The cache of the prefixes in ``rows`` (new row ``i`` continues old row ``rows[i]``)."""
        return [(k[rows], v[rows]) for k, v in cache]

    def _self_attention(
        self,
        attn: nn.Module,
        index: int,
        x: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Self attention of the newest position (``x``: rows, 1, dim) over the whole prefix."""
        rows = x.size(0)
        q, k, v = F.linear(x, *self.qkv[index]).chunk(3, dim=-1)
        q = attn.q_norm(_heads(attn, q, rows))
        k = attn.k_norm(_heads(attn, k, rows))
        v = _heads(attn, v, rows)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(attn.d_k)
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return attn.linear_out(out.reshape(rows, 1, attn.h * attn.d_k)), (k, v)

    def _source_attention(
        self, attn: nn.Module, x: torch.Tensor, index: int, slot_of_row: torch.Tensor
    ) -> torch.Tensor:
        """Source attention of every row (``x``: rows, 1, dim) on its utterance's cached memory.

        Rows are scattered into ``utterances x slots`` query positions
        (``slot_of_row``), so each utterance's keys serve all its rows in one matmul.
        """
        n_utt, dim = self.padding_bias.size(0), attn.h * attn.d_k
        q_rows = attn.linear_q(x)[:, 0]
        q = q_rows.new_zeros(n_utt * self.slots, dim).index_copy_(0, slot_of_row, q_rows)
        q = q.view(n_utt, self.slots, attn.h, attn.d_k).transpose(1, 2)
        scores = torch.matmul(attn.q_norm(q), self.keys[index]) / math.sqrt(attn.d_k)
        # MultiHeadedAttention fills padded frames with the dtype's minimum before the
        # softmax and zeros them after it; adding that minimum gives the same weights.
        weights = torch.softmax(scores + self.padding_bias, dim=-1)
        out = torch.matmul(weights, self.values[index])  # (utterances, heads, slots, d_k)
        out = out.transpose(1, 2).reshape(n_utt * self.slots, dim)[slot_of_row]
        return attn.linear_out(out.unsqueeze(1))

    def _layer(
        self,
        layer: nn.Module,
        index: int,
        x: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        slot_of_row: torch.Tensor,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``DecoderLayer.forward`` (eval mode) for the newest position."""
        residual = x
        if layer.normalize_before:
            x = layer.norm1(x)
        attended, kv = self._self_attention(layer.self_attn, index, x, cache)
        if layer.concat_after:
            x = residual + layer.concat_linear1(torch.cat((x, attended), dim=-1))
        else:
            x = residual + attended
        if not layer.normalize_before:
            x = layer.norm1(x)

        residual = x
        if layer.normalize_before:
            x = layer.norm2(x)
        attended = self._source_attention(layer.src_attn, x, index, slot_of_row)
        if layer.concat_after:
            x = residual + layer.concat_linear2(torch.cat((x, attended), dim=-1))
        else:
            x = residual + attended
        if not layer.normalize_before:
            x = layer.norm2(x)

        residual = x
        if layer.normalize_before:
            x = layer.norm3(x)
        x = residual + layer.feed_forward(x)
        if not layer.normalize_before:
            x = layer.norm3(x)
        return x, kv

    def __call__(
        self, ys: torch.Tensor, cache: KVCache | None, slot_of_row: torch.Tensor
    ) -> tuple[torch.Tensor, KVCache]:
        """Log probabilities of the next token for every row.

        Args:
            ys: Prefixes ``(rows, length)`` starting with ``<sos>``.
            cache: The cache returned for ``ys[:, :-1]`` (reordered to ``ys``'s
                rows), or ``None`` at the first step.
            slot_of_row: ``utterance * slots + slot`` of each row (distinct).

        Returns:
            tuple[torch.Tensor, KVCache]: ``(rows, vocab)`` log probabilities
            and the cache for ``ys``.
        """
        decoder = self.decoder
        x = decoder.embed(ys)[:, -1:]  # token embedding + position encoding of the newest token
        new_cache = []
        for index, layer in enumerate(decoder.decoders):
            layer_cache = None if cache is None else cache[index]
            x, kv = self._layer(layer, index, x, layer_cache, slot_of_row)
            new_cache.append(kv)
        y = decoder.after_norm(x[:, -1]) if decoder.normalize_before else x[:, -1]
        if decoder.output_layer is not None:
            y = torch.log_softmax(decoder.output_layer(y), dim=-1)
        return y, new_cache
