"""Padded batch encoding that gives each utterance the encoder output it gets alone.

``ESPnetASRModel.encode`` on a zero-padded batch is not the same as encoding
each utterance on its own (espnet 202511), for three reasons:

1. the STFT front end reflect-pads the *padded* signal, so an utterance's last
   frames see batch zeros instead of its own reflected samples;
2. ``Conv2dSubsampling`` (and friends) derive output masks by slicing the input
   mask, which over-counts a padded utterance's length by up to one frame per
   subsampling stage, so the encoder attends to (and returns) frames computed
   from padding;
3. depthwise time convolutions read padded frames: conformer's convolution module,
   (E-)Branchformer's cgMLP and E-Branchformer's merge module (``depthwise_conv_fusion``,
   OWSM-CTC's too, whose subsampling puts two prompt frames before the speech).

:func:`encode_padded` removes all three: the front end runs per utterance, the
subsampled mask is recomputed from the true lengths (convolution arithmetic),
and depthwise time convolutions see zeros beyond each utterance's end, exactly
as a single-utterance forward does.

Encoders may hold other layers that read padded frames (a padded convolution in
a VGG front layer, a new layer type). :func:`padding_mismatch` measures, on the
model at hand, how far a padded batch's output is from each utterance's output
alone, so a backend can refuse to batch a model whose answers padding would change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

_LAYER_MODULES = (
    ("espnet.nets.pytorch_backend.conformer.convolution", "ConvolutionModule", "depthwise_conv"),
    ("espnet2.asr.layers.cgmlp", "ConvolutionalSpatialGatingUnit", "conv"),
    (
        "espnet2.asr.encoder.e_branchformer_encoder",
        "EBranchformerEncoderLayer",
        "depthwise_conv_fusion",
    ),
    (  # OWSM-CTC's
        "espnet2.asr.encoder.e_branchformer_ctc_encoder",
        "EBranchformerEncoderLayer",
        "depthwise_conv_fusion",
    ),
)


def _time_convolutions(encoder: nn.Module) -> list[nn.Module]:
    """Depthwise time convolutions of the encoder that would read padded frames."""
    import importlib

    found: list[nn.Module] = []
    for module_name, class_name, attr in _LAYER_MODULES:
        cls = getattr(importlib.import_module(module_name), class_name)
        found += [getattr(m, attr) for m in encoder.modules() if isinstance(m, cls)]
    return found


def subsampled_lengths(embed: nn.Module | None, lengths: torch.Tensor) -> torch.Tensor:
    """Output lengths of a subsampling front layer for unpadded inputs of ``lengths``.

    Applies the convolution arithmetic of the layer's ``conv`` stack along time
    (``kernel_size[0]``, ``stride[0]``, ...), which is what a single-utterance
    forward produces; layers without a ``conv`` stack keep the length.
    """
    convs = getattr(embed, "conv", None)
    if not isinstance(convs, nn.Sequential):
        return lengths
    out = lengths.clone()
    for conv in convs:
        if isinstance(conv, nn.Conv1d | nn.Conv2d):
            padding = conv.padding[0] if isinstance(conv.padding, tuple) else 0
            span = conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
            out = torch.div(out + 2 * padding - span, conv.stride[0], rounding_mode="floor") + 1
    return out


@contextlib.contextmanager
def _exact_padding(encoder: nn.Module) -> Iterator[None]:
    """Hooks that make a padded encoder forward match per-utterance forwards."""
    state: dict[str, torch.Tensor] = {}
    embed = getattr(encoder, "embed", None)

    def fix_mask(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if not (isinstance(output, tuple) and len(output) == 2 and len(args) in (2, 3)):
            return output
        xs, mask = output
        if not isinstance(mask, torch.Tensor) or not isinstance(args[1], torch.Tensor):
            return output
        lengths = subsampled_lengths(module, args[1].sum(dim=-1).view(-1))
        prefix = args[2] if len(args) == 3 else None
        if isinstance(prefix, torch.Tensor):  # OWSM-CTC: <lang> <task> frames before the speech
            lengths = lengths + prefix.size(1)
        frames = torch.arange(mask.size(-1), device=mask.device)
        state["mask"] = (frames[None, :] < lengths[:, None]).unsqueeze(1)
        return xs, state["mask"]

    def zero_padding(module: nn.Module, args: tuple[Any, ...]) -> Any:
        mask = state.get("mask")
        if mask is None or args[0].size(-1) != mask.size(-1):
            return None
        return (args[0].masked_fill(~mask, 0.0), *args[1:])

    handles = [h.register_forward_pre_hook(zero_padding) for h in _time_convolutions(encoder)]
    if isinstance(embed, nn.Module):
        handles.append(embed.register_forward_hook(fix_mask))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def extract_features(asr_model: Any, speech: torch.Tensor) -> torch.Tensor:
    """Front-end features ``(frames, dim)`` of one unpadded utterance ``(samples,)``."""
    lengths = torch.tensor([speech.size(0)], dtype=torch.long, device=speech.device)
    feats, _ = asr_model._extract_feats(speech.unsqueeze(0), lengths)
    return feats[0]


def too_short_for_subsampling(asr_model: Any, n_frames: int) -> int | None:
    """Minimum frame count the encoder's subsampling needs, if ``n_frames`` is fewer."""
    from espnet.nets.pytorch_backend.transformer.subsampling import check_short_utt

    embed = getattr(asr_model.encoder, "embed", None)
    short, limit = check_short_utt(embed, n_frames)
    if short:
        return int(limit)
    lengths = subsampled_lengths(embed, torch.tensor([n_frames]))
    return n_frames + 1 if int(lengths[0]) < 1 else None


def min_input_samples(
    asr_model: Any,
    *,
    upper: int = 1 << 16,
    too_short: Callable[[Any, int], int | None] = too_short_for_subsampling,
) -> int:
    """The fewest waveform samples that the model's front end and subsampling accept.

    Found by bisection over real front-end calls (the front end's own padding
    rules decide, whatever they are); ``upper`` is returned if even that fails.

    Args:
        asr_model: An espnet2 ASR model (``_extract_feats``).
        upper: The most samples tried.
        too_short: ``(asr_model, frames)`` -> the frames needed, or ``None`` when
            enough (default: the ``espnet2.asr`` encoders' subsampling check).
    """

    def accepted(n_samples: int) -> bool:
        speech = torch.zeros(n_samples, device=next(asr_model.parameters()).device)
        try:
            feats = extract_features(asr_model, speech)
        except RuntimeError:
            return False
        return too_short(asr_model, feats.size(0)) is None

    low, high = 1, upper
    if not accepted(high):
        return upper
    while low < high:
        middle = (low + high) // 2
        if accepted(middle):
            high = middle
        else:
            low = middle + 1
    return low


def encode_padded(
    asr_model: Any, feats: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder output and lengths of a padded batch (see :func:`encode_padded_layers`)."""
    out, lengths, _ = encode_padded_layers(asr_model, feats)
    return out, lengths


def encode_padded_layers(
    asr_model: Any, feats: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """Run normalisation and the encoder once on a zero-padded batch of features.

    Mirrors ``ESPnetASRModel.encode`` after its front end (normalize,
    pre-encoder, encoder, post-encoder), with the padding fixes of this module.

    Args:
        asr_model: An ``espnet2`` ``ESPnetASRModel`` in eval mode.
        feats: Per-utterance features from :func:`extract_features`.

    Returns:
        tuple: Encoder output ``(batch, frames, dim)``, output lengths ``(batch,)``,
        and the intermediate layers' outputs ``[(layer, (batch, frames, dim))]`` of an
        interCTC encoder (empty for others).
    """
    lengths = torch.tensor([f.size(0) for f in feats], dtype=torch.long, device=feats[0].device)
    xs = pad_sequence(list(feats), batch_first=True)
    if asr_model.normalize is not None:
        xs, lengths = asr_model.normalize(xs, lengths)
    if asr_model.preencoder is not None:
        xs, lengths = asr_model.preencoder(xs, lengths)
    encoder = asr_model.encoder
    with _exact_padding(encoder):
        if getattr(encoder, "interctc_use_conditioning", False):
            out, out_lengths, _ = encoder(xs, lengths, ctc=asr_model.ctc)
        else:
            out, out_lengths, _ = encoder(xs, lengths)
    intermediate: list[tuple[int, torch.Tensor]] = []
    if isinstance(out, tuple):
        out, intermediate = out[0], list(out[1])
    if asr_model.postencoder is not None:
        out, out_lengths = asr_model.postencoder(out, out_lengths)
    return out, out_lengths, intermediate


def encode_padded_prompted(
    s2t_model: Any,
    feats: Sequence[torch.Tensor],
    text_prev: Sequence[torch.Tensor],
    prefix: torch.Tensor,
) -> tuple[Any, torch.Tensor]:
    """OWSM-CTC's encoder on a padded batch: ``ESPnetS2TCTCModel.encode`` after its front end.

    Each clip's previous-text prompt (padded with ``<eos>``, masked by its length) goes
    through the prompt encoder; the speech encoder reads it by cross-attention, after the
    ``<lang> <task>`` prefix frames; the padding fixes of this module apply.

    Args:
        s2t_model: An ``ESPnetS2TCTCModel`` in eval mode.
        feats: Per-clip features from :func:`extract_features`.
        text_prev: Per-clip prompt token ids (1-D).
        prefix: ``(batch, 2)``: each clip's language and task token ids.

    Returns:
        tuple: The encoder's output (``(output, intermediate)`` for an interCTC encoder, as
        espnet2's) and output lengths ``(batch,)``, prefix frames counted.
    """
    from espnet.nets.pytorch_backend.nets_utils import make_pad_mask, pad_list

    device = feats[0].device
    prompts = pad_list(list(text_prev), s2t_model.eos).to(device)
    prompt_lengths = torch.tensor([len(t) for t in text_prev], dtype=torch.long, device=device)
    memory, memory_lengths, _ = s2t_model.prompt_encoder(
        s2t_model.pos_enc(s2t_model.embed(prompts)), prompt_lengths
    )
    memory_mask = (~make_pad_mask(memory_lengths)[:, None, :]).to(device)
    lengths = torch.tensor([f.size(0) for f in feats], dtype=torch.long, device=device)
    xs = pad_sequence(list(feats), batch_first=True)
    if s2t_model.normalize is not None:
        xs, lengths = s2t_model.normalize(xs, lengths)
    with _exact_padding(s2t_model.encoder):
        out, out_lengths, _ = s2t_model.encoder(
            xs,
            lengths,
            ctc=s2t_model.ctc,
            prefix_embeds=s2t_model.embed_proj(s2t_model.embed(prefix.to(device))),
            memory=s2t_model.prompt_proj(memory),
            memory_mask=memory_mask,
        )
    return out, out_lengths


# Waveform lengths (samples) of the padding self-check: different, none a multiple of another,
# longest first as a bucket is (RNN encoders pack sequences sorted by length).
PADDING_CHECK_SAMPLES = (26_000, 17_000, 11_000)
# Largest difference, relative to the largest output value, taken for floating-point noise.
# Measured on CPU in float32: 2e-7 to 8e-7 for the egs2 encoders served batched (reduced and
# full size); a layer that reads padding: 4e-2 to 1.3e-1 (vgg_rnn; conformer, branchformer and
# e-branchformer without the fixes above). The margin leaves room for GPU kernels (TF32).
PADDING_TOLERANCE = 1e-3


def padding_mismatch(
    asr_model: Any,
    min_samples: int = 0,
    encode: Callable[[Any, Sequence[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]] = (
        encode_padded
    ),
) -> float:
    """How much a padded batch changes the encoder output, relative to its magnitude.

    Encodes deterministic noise of :data:`PADDING_CHECK_SAMPLES` lengths (each at
    least ``min_samples``) as one padded batch and one by one, and compares every
    utterance's valid frames.

    Args:
        asr_model: An ``espnet2`` model in eval mode (``_extract_feats``).
        min_samples: The fewest samples the model accepts.
        encode: ``(model, features) -> (output, lengths)`` of a padded batch
            (default: :func:`encode_padded`, ``ESPnetASRModel.encode``'s steps).

    Returns:
        float: The largest absolute difference divided by the largest absolute
        output value alone (0.0: the batch is exact; ``inf``: the lengths differ).
    """
    device = next(asr_model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    feats = [
        extract_features(
            asr_model,
            (0.1 * torch.randn(max(n, min_samples), generator=generator)).to(device),
        )
        for n in PADDING_CHECK_SAMPLES
    ]
    batch, lengths = encode(asr_model, feats)
    worst, scale = 0.0, 0.0
    for row, feat in enumerate(feats):
        alone, alone_lengths = encode(asr_model, [feat])
        if int(lengths[row]) != int(alone_lengths[0]):
            return float("inf")
        valid = alone[0, : int(alone_lengths[0])]
        worst = max(worst, float((batch[row, : int(lengths[row])] - valid).abs().max()))
        scale = max(scale, float(valid.abs().max()))
    return worst / max(scale, 1e-12)


@contextlib.contextmanager
def encode_returns(model: nn.Module, encode: Callable[..., Any]) -> Iterator[None]:
    """Within: ``model.encode(...)`` is ``encode(...)`` (an output already computed).

    What lets an espnet2 inference class's own ``__call__`` decode one row of a batched
    encoder pass: its search and output formatting run unchanged.
    """
    model.encode = encode
    try:
        yield
    finally:
        del model.encode
