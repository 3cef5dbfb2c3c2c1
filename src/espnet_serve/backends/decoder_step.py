"""One decoding step of an espnet2 transformer decoder for many utterances x beams.

``TransformerDecoder.batch_score`` (what ``Speech2Text`` calls) projects the
encoder output to source-attention keys and values again at every step and for
every hypothesis. Here they are projected once per utterance, and each
utterance's beam slots attend to them as extra queries: rows are laid out
``utterance * slots + slot``. Everything else is the decoder's own modules,
called as ``DecoderLayer.forward`` calls them with a cache.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def check_decoder_supported(decoder: Any) -> None:
    """Raise ``NotImplementedError`` unless ``decoder`` is a plain espnet2 transformer decoder.

    Supported: ``BaseTransformerDecoder`` subclasses that keep its
    ``forward_one_step`` (transformer and lightweight/dynamic convolution
    decoders) whose layers use standard multi-head source attention.
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
            and type(layer.src_attn) is MultiHeadedAttention
            for layer in decoder.decoders
        )
    )
    if not supported:
        raise NotImplementedError(
            f"BatchedSpeech2Text supports espnet2 transformer-family attention decoders; "
            f"this model has {type(decoder).__name__}. Use ctc_weight=1.0 (CTC only) or "
            "espnet2.bin.asr_inference.Speech2Text."
        )


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
        self.mask = (frames[None, :] < lengths.to(memory.device)[:, None])[:, None, None, :]
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for layer in decoder.decoders:
            attn = layer.src_attn
            n_utt = memory.size(0)
            k = attn.linear_k(memory).view(n_utt, -1, attn.h, attn.d_k).transpose(1, 2)
            v = attn.linear_v(memory).view(n_utt, -1, attn.h, attn.d_k).transpose(1, 2)
            self.keys.append(attn.k_norm(k))
            self.values.append(v)

    def keep(self, utterances: torch.Tensor) -> None:
        """Drop every utterance not in ``utterances``."""
        self.mask = self.mask[utterances]
        self.keys = [k[utterances] for k in self.keys]
        self.values = [v[utterances] for v in self.values]

    def _source_attention(self, attn: nn.Module, x: torch.Tensor, index: int) -> torch.Tensor:
        """Run ``MultiHeadedAttention.forward`` on cached keys and values (``x``: rows, 1, dim)."""
        n_utt = self.mask.size(0)
        q = attn.linear_q(x).view(n_utt, self.slots, attn.h, attn.d_k).transpose(1, 2)
        q = attn.q_norm(q)  # (utterances, heads, slots, d_k)
        scores = torch.matmul(q, self.keys[index].transpose(-2, -1)) / math.sqrt(attn.d_k)
        padding = ~self.mask
        scores = scores.masked_fill(padding, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1).masked_fill(padding, 0.0)
        out = torch.matmul(weights, self.values[index])  # (utterances, heads, slots, d_k)
        out = out.transpose(1, 2).reshape(n_utt * self.slots, 1, attn.h * attn.d_k)
        return attn.linear_out(out)

    def _layer(
        self,
        layer: nn.Module,
        index: int,
        tgt: torch.Tensor,
        tgt_mask: torch.Tensor,
        cache: torch.Tensor | None,
    ) -> torch.Tensor:
        """``DecoderLayer.forward`` (eval mode) with the cached source attention."""
        residual = tgt
        if layer.normalize_before:
            tgt = layer.norm1(tgt)
        if cache is None:
            tgt_q, tgt_q_mask = tgt, tgt_mask
        else:
            tgt_q, residual, tgt_q_mask = tgt[:, -1:, :], residual[:, -1:, :], tgt_mask[:, -1:, :]
        if layer.concat_after:
            tgt_concat = torch.cat((tgt_q, layer.self_attn(tgt_q, tgt, tgt, tgt_q_mask)), dim=-1)
            x = residual + layer.concat_linear1(tgt_concat)
        else:
            x = residual + layer.self_attn(tgt_q, tgt, tgt, tgt_q_mask)
        if not layer.normalize_before:
            x = layer.norm1(x)

        residual = x
        if layer.normalize_before:
            x = layer.norm2(x)
        if layer.concat_after:
            x_concat = torch.cat((x, self._source_attention(layer.src_attn, x, index)), dim=-1)
            x = residual + layer.concat_linear2(x_concat)
        else:
            x = residual + self._source_attention(layer.src_attn, x, index)
        if not layer.normalize_before:
            x = layer.norm2(x)

        residual = x
        if layer.normalize_before:
            x = layer.norm3(x)
        x = residual + layer.feed_forward(x)
        if not layer.normalize_before:
            x = layer.norm3(x)
        return x if cache is None else torch.cat([cache, x], dim=1)

    def __call__(
        self, ys: torch.Tensor, cache: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Log probabilities of the next token for every row.

        Args:
            ys: Prefixes ``(rows, length)`` starting with ``<sos>``.
            cache: Per-layer outputs for ``ys[:, :-1]`` from the previous step, or ``None``.

        Returns:
            tuple[torch.Tensor, list[torch.Tensor]]: ``(rows, vocab)`` log
            probabilities and the per-layer cache for ``ys``.
        """
        from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask

        decoder = self.decoder
        tgt_mask = subsequent_mask(ys.size(-1), device=ys.device).unsqueeze(0)
        x = decoder.embed(ys)
        new_cache = []
        for index, layer in enumerate(decoder.decoders):
            x = self._layer(layer, index, x, tgt_mask, None if cache is None else cache[index])
            new_cache.append(x)
        y = decoder.after_norm(x[:, -1]) if decoder.normalize_before else x[:, -1]
        if decoder.output_layer is not None:
            y = torch.log_softmax(decoder.output_layer(y), dim=-1)
        return y, new_cache
