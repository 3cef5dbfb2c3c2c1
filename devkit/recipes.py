"""The ESPnet egs2 recipes whose models the tests and benchmarks build, at their real sizes.

Each :class:`Recipe` is one training config of espnet/espnet (its path in ``config``), under
``egs2/librispeech_100/asr1/conf/`` (:data:`LIBRISPEECH_100`) or ``egs2/aishell/asr1/conf/``
(:data:`AISHELL`): its model options, read from that yaml as facts and named as the
``devkit.random_init`` builders name them, so ``write_random_asr_experiment(out,
**recipe.options)`` builds the recipe's model. Training options (optimiser, SpecAugment,
batching) and dropout rates are left out, except the two transducer recipes' dropout rates,
which the tests' models have always been built with.

Benchmarks build the real size; tests build :func:`reduced`: dimensions and depths cut to
:data:`CI_SIZES`, every other option as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LIBRISPEECH_100 = "egs2/librispeech_100/asr1/conf/"
AISHELL = "egs2/aishell/asr1/conf/"
FISHER_CALLHOME_SPANISH_ST = "egs2/fisher_callhome_spanish/st1/conf/"
MUST_C_V2_ST = "egs2/must_c_v2/st1/conf/"
OWSM_V31 = "egs2/owsm_v3.1/s2t1/conf/"
OWSM_CTC_V31 = "egs2/owsm_ctc_v3.1/s2t1/conf/"

CI_WIDTH = 64
CI_SIZES: dict[str, int] = {
    "output_size": CI_WIDTH,  # encoder width
    "hidden_size": CI_WIDTH,  # asr_transducer block width, RNN decoder state
    "embed_size": CI_WIDTH,  # RNN decoder embedding
    "att_unit": CI_WIDTH,  # transformer LM width
    "embed_unit": 32,  # transformer LM embedding
    "linear_units": 128,  # feed-forward and cgMLP widths
    "linear_size": 128,
    "cgmlp_linear_units": 128,
    "unit": 128,
    "attention_heads": 2,
    "heads": 2,
    "head": 2,
    "num_blocks": 2,  # depths
    "num_layers": 1,
    "layer": 2,
}
CI_DECODER_SIZES: dict[str, int] = {**CI_SIZES, "num_blocks": 1}


@dataclass(frozen=True)
class Recipe:
    """One egs2 training config's model options.

    Attributes:
        config: The config's path in espnet/espnet.
        options: Its model options, named as the ``devkit.random_init`` builders name them
            (``encoder``, ``encoder_conf``, ``decoder``, ``decoder_conf``, ``joint_net_conf``,
            ``ctc_weight``; ``joint_network_conf``, ``model_conf``; ``lm``, ``lm_conf``).
    """

    config: str
    options: dict[str, Any]


# The decoder of every hybrid recipe here.
TRANSFORMER_DECODER: dict[str, Any] = {"attention_heads": 4, "linear_units": 2048, "num_blocks": 6}
# What librispeech_100's conformer encoders share.
_CONFORMER: dict[str, Any] = {
    "output_size": 256,
    "attention_heads": 4,
    "input_layer": "conv2d",
    "normalize_before": True,
    "rel_pos_type": "latest",
    "pos_enc_layer_type": "rel_pos",
    "selfattention_layer_type": "rel_selfattn",
    "activation_type": "swish",
    "use_cnn_module": True,
    "cnn_module_kernel": 31,
}

LIBRISPEECH_100_CONFORMER = Recipe(
    f"{LIBRISPEECH_100}tuning/train_asr_conformer.yaml",
    {
        "encoder": "conformer",
        # Not the yaml's rel_pos_type: it sets none (espnet2's default, legacy, which turns
        # rel_pos into legacy_rel_pos); the benchmark has always built it with latest. The
        # yaml's macaron_style: false is espnet2's default.
        "encoder_conf": {
            **_CONFORMER,
            "linear_units": 2048,
            "num_blocks": 12,
            "input_layer": "conv2d6",
        },
        "decoder": "transformer",
        "decoder_conf": TRANSFORMER_DECODER,
        "ctc_weight": 0.3,
    },
)
# conf/train_asr.yaml, the recipe's default, links to this config.
LIBRISPEECH_100_TRAIN_ASR = Recipe(
    f"{LIBRISPEECH_100}tuning/train_asr_conformer_lr2e-3_warmup15k_amp_nondeterministic.yaml",
    {
        "encoder": "conformer",
        "encoder_conf": {
            **_CONFORMER,
            "linear_units": 1024,
            "num_blocks": 12,
            "macaron_style": True,
        },
        "decoder": "transformer",
        "decoder_conf": TRANSFORMER_DECODER,
        "ctc_weight": 0.3,
    },
)
LIBRISPEECH_100_E_BRANCHFORMER = Recipe(
    f"{LIBRISPEECH_100}tuning/train_asr_e_branchformer_size256_mlp1024_linear1024_e12_"
    "mactrue_edrop0.0_ddrop0.0.yaml",
    {
        "encoder": "e_branchformer",
        "encoder_conf": {
            "output_size": 256,
            "attention_heads": 4,
            "attention_layer_type": "rel_selfattn",
            "pos_enc_layer_type": "rel_pos",
            "rel_pos_type": "latest",
            "cgmlp_linear_units": 1024,
            "cgmlp_conv_kernel": 31,
            "use_linear_after_conv": False,
            "gate_activation": "identity",
            "num_blocks": 12,
            "input_layer": "conv2d",
            "linear_units": 1024,
            "positionwise_layer_type": "linear",
            "use_ffn": True,
            "macaron_ffn": True,
            "merge_conv_kernel": 31,
        },
        "decoder": "transformer",
        "decoder_conf": TRANSFORMER_DECODER,
        "ctc_weight": 0.3,
    },
)
# train_conformer_scctc.yaml is this config with interctc_use_conditioning: true.
LIBRISPEECH_100_CONFORMER_INTERCTC = Recipe(
    f"{LIBRISPEECH_100}tuning/train_conformer_interctc.yaml",
    {
        "encoder": "conformer",
        "encoder_conf": {
            **_CONFORMER,
            "linear_units": 1024,
            "num_blocks": 18,
            "macaron_style": True,
            "interctc_layer_idx": [6, 12],
        },
        # The yaml names no decoder: at ctc_weight 1.0 espnet2 drops the one it is given.
        "decoder": "transformer",
        "decoder_conf": TRANSFORMER_DECODER,
        "ctc_weight": 1.0,
    },
)
LIBRISPEECH_100_CONFORMER_TRANSDUCER = Recipe(
    f"{LIBRISPEECH_100}tuning/train_asr_transducer_conformer_e15_linear1024.yaml",
    {
        "encoder": "conformer",
        "encoder_conf": {
            **_CONFORMER,
            "linear_units": 1024,
            "num_blocks": 15,
            "macaron_style": True,
        },
        "decoder": "transducer",
        "decoder_conf": {
            "rnn_type": "lstm",
            "num_layers": 1,
            "hidden_size": 256,
            "dropout": 0.1,
            "dropout_embed": 0.2,
        },
        "joint_net_conf": {"joint_space_size": 320},
        "ctc_weight": 0.3,
    },
)
# espnet2.asr_transducer. The yaml predates the option renames; keys as this espnet names them
# (dim_linear: linear_size, dim_hidden: hidden_size, conv_mod_kernel: conv_mod_kernel_size,
# input_conf block_type: vgg: vgg_like, dim_embedding: embed_size, dim_joint_space:
# joint_space_size, dropout_rate_pos_enc: main_conf pos_enc_dropout_rate, ...); its main_conf
# pos_wise_layer_type: linear and pos_enc_layer_type: rel_pos are the only kinds left.
LIBRISPEECH_100_CONFORMER_RNN_TRANSDUCER = Recipe(
    f"{LIBRISPEECH_100}tuning/transducer/train_conformer-rnn_transducer.yaml",
    {
        "encoder_conf": {
            "main_conf": {
                "pos_wise_act_type": "swish",
                "conv_mod_act_type": "swish",
                "pos_enc_dropout_rate": 0.2,
            },
            "input_conf": {"vgg_like": True},
            "body_conf": [
                {
                    "block_type": "conformer",
                    "linear_size": 1024,
                    "hidden_size": 256,
                    "heads": 4,
                    "dropout_rate": 0.1,
                    "pos_wise_dropout_rate": 0.1,
                    "att_dropout_rate": 0.1,
                    "macaron_style": True,
                    "conv_mod_kernel_size": 31,
                    "num_blocks": 18,
                }
            ],
        },
        "decoder": "rnn",
        "decoder_conf": {
            "rnn_type": "lstm",
            "num_layers": 1,
            "embed_size": 256,
            "hidden_size": 256,
            "dropout_rate": 0.1,
            "embed_dropout_rate": 0.2,
        },
        "joint_network_conf": {"joint_space_size": 256},
        "model_conf": {"transducer_weight": 1.0, "auxiliary_ctc_weight": 0.3},
    },
)
LIBRISPEECH_100_TRANSFORMER_LM = Recipe(
    f"{LIBRISPEECH_100}train_lm.yaml",
    {
        "lm": "transformer",
        "lm_conf": {
            "pos_enc": None,
            "embed_unit": 128,
            "att_unit": 512,
            "head": 8,
            "unit": 2048,
            "layer": 16,
        },
    },
)
AISHELL_BRANCHFORMER_E24 = Recipe(
    f"{AISHELL}tuning/train_asr_branchformer_e24.yaml",
    {
        "encoder": "branchformer",
        "encoder_conf": {
            "output_size": 256,
            "use_attn": True,
            "attention_heads": 4,
            "attention_layer_type": "rel_selfattn",
            "pos_enc_layer_type": "rel_pos",
            "rel_pos_type": "latest",
            "use_cgmlp": True,
            "cgmlp_linear_units": 2048,
            "cgmlp_conv_kernel": 31,
            "use_linear_after_conv": False,
            "gate_activation": "identity",
            "merge_method": "concat",
            "num_blocks": 24,
            "input_layer": "conv2d",
        },
        "decoder": "transformer",
        "decoder_conf": TRANSFORMER_DECODER,
        "ctc_weight": 0.3,
    },
)
AISHELL_STREAMING_CONFORMER = Recipe(
    f"{AISHELL}train_asr_streaming_conformer.yaml",
    {
        "encoder": "contextual_block_conformer",
        "encoder_conf": {
            "output_size": 256,
            "attention_heads": 4,
            "linear_units": 2048,
            "num_blocks": 12,
            "input_layer": "conv2d",
            "normalize_before": True,
            "activation_type": "swish",
            "macaron_style": True,
            "use_cnn_module": True,
            "cnn_module_kernel": 15,
            "block_size": 40,
            "hop_size": 16,
            "look_ahead": 16,
            "init_average": True,
            "ctx_pos_enc": True,
        },
        "decoder": "transformer",
        "decoder_conf": TRANSFORMER_DECODER,
        "ctc_weight": 0.3,
    },
)


# Spanish speech to English text. The auxiliary decoders train only: at mtlalpha 1.0 the
# transcript is learnt by CTC alone, at mt_weight 0 there is no text-to-text loss.
FISHER_CALLHOME_SPANISH_CONFORMER_ST = Recipe(
    f"{FISHER_CALLHOME_SPANISH_ST}tuning/train_conformer_st.yaml",
    {
        "encoder": "conformer",
        "encoder_conf": {
            "output_size": 256,
            "attention_heads": 4,
            "linear_units": 2048,
            "num_blocks": 12,
            "input_layer": "conv2d",
            "normalize_before": True,
            "macaron_style": True,
            "pos_enc_layer_type": "rel_pos",
            "selfattention_layer_type": "rel_selfattn",
            "activation_type": "swish",
            "use_cnn_module": True,
            "cnn_module_kernel": 31,
        },
        "decoder": "transformer",
        "decoder_conf": {"input_layer": "embed", "num_blocks": 6, "linear_units": 2048},
        "extra_asr_decoder": "transformer",
        "extra_asr_decoder_conf": {"input_layer": "embed", "num_blocks": 2, "linear_units": 2048},
        "extra_mt_decoder": "transformer",
        "extra_mt_decoder_conf": {"input_layer": "embed", "num_blocks": 2, "linear_units": 2048},
        "model_conf": {"asr_weight": 0.3, "mt_weight": 0.0, "mtlalpha": 1.0},
    },
)


# English speech to German text, with the current relative positions (rel_pos_type: latest):
# a padded batch encodes each clip exactly as alone, where Fisher's legacy ones do not.
# Decoded by tuning/decode_st_conformer.yaml: beam 10, maxlenratio 1.2, minlenratio 0.5.
MUST_C_V2_CONFORMER_ST = Recipe(
    f"{MUST_C_V2_ST}tuning/train_st_conformer.yaml",
    {
        "encoder": "conformer",
        "encoder_conf": {
            "output_size": 256,
            "attention_heads": 4,
            "linear_units": 2048,
            "num_blocks": 12,
            "input_layer": "conv2d",
            "normalize_before": True,
            "macaron_style": True,
            "rel_pos_type": "latest",
            "pos_enc_layer_type": "rel_pos",
            "selfattention_layer_type": "rel_selfattn",
            "activation_type": "swish",
            "use_cnn_module": True,
            "cnn_module_kernel": 31,
        },
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 4, "linear_units": 2048, "num_blocks": 6},
        "extra_asr_decoder": "transformer",
        "extra_asr_decoder_conf": {"input_layer": "embed", "num_blocks": 6, "linear_units": 2048},
        "extra_mt_decoder": "transformer",
        "extra_mt_decoder_conf": {"input_layer": "embed", "num_blocks": 2, "linear_units": 2048},
        "model_conf": {"asr_weight": 0.3, "mt_weight": 0.0, "mtlalpha": 0.3},
    },
)


# OWSM v3.1 at base size (101M). egs2 holds only the medium config (1.02B); its header names
# the base's (size384_e6_d6_..._lessreg): the same options at width 384, 6 encoder and 6
# decoder blocks; 6 heads and 1536-unit feed-forward and cgMLP layers as the OWSM v3.1 paper's
# table gives them. Flash attention is off: inference here has none.
OWSM_V31_BASE = Recipe(
    f"{OWSM_V31}train_s2t_ebf_conv2d_size1024_e18_d18_piecewise_lr2e-4_warmup60k_flashattn.yaml",
    {
        "preprocessor": "s2t",
        "preprocessor_conf": {
            "text_prev_name": "text_prev",
            "text_ctc_name": "text_ctc",
            "fs": 16000,
            "na_symbol": "<na>",
            "speech_length": 30,
            "speech_resolution": 0.02,
            "speech_init_silence": 30,
            "text_prev_apply_prob": 0.5,
            "time_apply_prob": 0.5,
            "notime_symbol": "<notimestamps>",
            "first_time_symbol": "<0.00>",
            "last_time_symbol": "<30.00>",
        },
        "encoder": "e_branchformer",
        "encoder_conf": {
            "output_size": 384,
            "attention_heads": 6,
            "attention_layer_type": "selfattn",
            "pos_enc_layer_type": "abs_pos",
            "rel_pos_type": "latest",
            "cgmlp_linear_units": 1536,
            "cgmlp_conv_kernel": 31,
            "use_linear_after_conv": False,
            "gate_activation": "identity",
            "num_blocks": 6,
            "input_layer": "conv2d",
            "linear_units": 1536,
            "positionwise_layer_type": "linear",
            "use_ffn": True,
            "macaron_ffn": True,
            "merge_conv_kernel": 31,
        },
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 6, "linear_units": 1536, "num_blocks": 6},
        "model_conf": {"ctc_weight": 0.3, "sym_na": "<na>"},
    },
)
# OWSM-CTC v3.1 (1.01B): interCTC layers conditioned on the prompt encoder's output.
OWSM_CTC_V31_MEDIUM = Recipe(
    f"{OWSM_CTC_V31}train_s2t_multitask-ctc_ebf27_conv2d8_size1024.yaml",
    {
        "preprocessor": "s2t_ctc",
        "preprocessor_conf": {
            "na_symbol": "<na>",
            "speech_length": 30,
            "speech_init_silence": 30,
            "text_prev_apply_prob": 0.5,
            "lang_apply_prob": 0.5,
            "nolang_symbol": "<nolang>",
        },
        "encoder": "e_branchformer_ctc",
        "encoder_conf": {
            "output_size": 1024,
            "attention_heads": 16,
            "attention_layer_type": "selfattn",
            "pos_enc_layer_type": "abs_pos",
            "rel_pos_type": "latest",
            "cgmlp_linear_units": 4096,
            "cgmlp_conv_kernel": 31,
            "use_linear_after_conv": False,
            "gate_activation": "identity",
            "num_blocks": 27,
            "input_layer": "conv2d8",
            "linear_units": 4096,
            "positionwise_layer_type": "linear",
            "use_ffn": True,
            "macaron_ffn": True,
            "merge_conv_kernel": 31,
            "interctc_layer_idx": [6, 12, 15, 21],
            "interctc_use_conditioning": True,
            "use_cross_attention": [0, 0, 1] * 9,
        },
        "promptencoder": "transformer",
        "promptencoder_conf": {
            "output_size": 512,
            "attention_heads": 8,
            "linear_units": 2048,
            "num_blocks": 4,
        },
        "model": "espnet_ctc",
        "model_conf": {
            "interctc_weight": 0.8,
            "sym_na": "<na>",
            "ctc_asr_only": [True, True, True, False, False],
        },
    },
)


def reduced(recipe: Recipe) -> Recipe:
    """The recipe at the size tests build: dimensions and depths cut, every other option kept.

    Widths, feed-forward sizes, attention heads and depths take their :data:`CI_SIZES` value (a
    decoder's ``num_blocks``: :data:`CI_DECODER_SIZES`). A joint space keeps its ratio to the
    encoder width (320 at 256: 80). Intermediate CTC layers keep their places: the depth and
    ``interctc_layer_idx`` are divided by their greatest common divisor (18, [6, 12]: 3, [1, 2]).

    Args:
        recipe: A recipe at its real size.

    Returns:
        Recipe: The same config's options at the reduced size (new dicts).
    """
    options = {
        name: _cut(value, CI_DECODER_SIZES if name.endswith("decoder_conf") else CI_SIZES)
        for name, value in recipe.options.items()
    }
    encoder_conf = recipe.options.get("encoder_conf", {})
    if "interctc_layer_idx" in encoder_conf:
        layers = encoder_conf["interctc_layer_idx"]
        step = math.gcd(encoder_conf["num_blocks"], *layers)
        options["encoder_conf"]["num_blocks"] = encoder_conf["num_blocks"] // step
        options["encoder_conf"]["interctc_layer_idx"] = [layer // step for layer in layers]
        if "use_cross_attention" in encoder_conf:  # one flag per block: each step's last
            flags = encoder_conf["use_cross_attention"]
            options["encoder_conf"]["use_cross_attention"] = flags[step - 1 :: step]
    for name in ("joint_net_conf", "joint_network_conf"):
        if name in options:
            real = recipe.options[name]["joint_space_size"]
            options[name]["joint_space_size"] = real * CI_WIDTH // _encoder_width(encoder_conf)
    return Recipe(recipe.config, options)


def _cut(value: Any, sizes: Mapping[str, int]) -> Any:
    """``value`` copied, every option named in ``sizes`` set to that size, in nested confs too."""
    if isinstance(value, Mapping):
        return {
            key: sizes[key] if key in sizes else _cut(item, sizes) for key, item in value.items()
        }
    if isinstance(value, list):
        return [_cut(item, sizes) for item in value]
    return value


def _encoder_width(encoder_conf: Mapping[str, Any]) -> int:
    """The encoder's output width: ``output_size``, or its last ``body_conf`` block's."""
    if "output_size" in encoder_conf:
        return encoder_conf["output_size"]
    return encoder_conf["body_conf"][-1]["hidden_size"]


# Speech synthesis: LJSpeech's recipes (22.05 kHz, one speaker). Their model options as the
# configs give them (dropout rates included: inference turns them off); the discriminator is
# training only (in the weights file, never in a synthesis).
LJSPEECH_TTS = "egs2/ljspeech/tts1/conf/tuning/"
LJSPEECH_FS = 22050
# tts.sh's front end for LJSpeech (run.sh: 1024-point FFT, 256-sample shift).
LJSPEECH_STFT: dict[str, Any] = {"n_fft": 1024, "hop_length": 256, "win_length": None}
_HIFIGAN_DISCRIMINATOR: dict[str, Any] = {
    "discriminator_type": "hifigan_multi_scale_multi_period_discriminator",
    "discriminator_params": {
        "scales": 1,
        "scale_downsample_pooling": "AvgPool1d",
        "scale_downsample_pooling_params": {"kernel_size": 4, "stride": 2, "padding": 2},
        "scale_discriminator_params": {
            "in_channels": 1,
            "out_channels": 1,
            "kernel_sizes": [15, 41, 5, 3],
            "channels": 128,
            "max_downsample_channels": 1024,
            "max_groups": 16,
            "bias": True,
            "downsample_scales": [2, 2, 4, 4, 1],
            "nonlinear_activation": "LeakyReLU",
            "nonlinear_activation_params": {"negative_slope": 0.1},
            "use_weight_norm": True,
            "use_spectral_norm": False,
        },
        "follow_official_norm": False,
        "periods": [2, 3, 5, 7, 11],
        "period_discriminator_params": {
            "in_channels": 1,
            "out_channels": 1,
            "kernel_sizes": [5, 3],
            "channels": 32,
            "downsample_scales": [3, 3, 3, 3, 1],
            "max_downsample_channels": 1024,
            "bias": True,
            "nonlinear_activation": "LeakyReLU",
            "nonlinear_activation_params": {"negative_slope": 0.1},
            "use_weight_norm": True,
            "use_spectral_norm": False,
        },
    },
}
_HIFIGAN_DECODER: dict[str, Any] = {
    "upsample_scales": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
}
VITS_LJSPEECH = Recipe(
    f"{LJSPEECH_TTS}train_vits.yaml",
    {
        "tts": "vits",
        "tts_conf": {
            "generator_type": "vits_generator",
            "generator_params": {
                "hidden_channels": 192,
                "spks": -1,
                "global_channels": -1,
                "segment_size": 32,
                "text_encoder_attention_heads": 2,
                "text_encoder_ffn_expand": 4,
                "text_encoder_blocks": 6,
                "text_encoder_positionwise_layer_type": "conv1d",
                "text_encoder_positionwise_conv_kernel_size": 1,
                "text_encoder_positional_encoding_layer_type": "rel_pos",
                "text_encoder_self_attention_layer_type": "rel_selfattn",
                "text_encoder_activation_type": "swish",
                "text_encoder_normalize_before": True,
                "text_encoder_dropout_rate": 0.1,
                "text_encoder_positional_dropout_rate": 0.0,
                "text_encoder_attention_dropout_rate": 0.0,
                "text_encoder_conformer_kernel_size": 7,
                "use_macaron_style_in_text_encoder": True,
                "use_conformer_conv_in_text_encoder": True,
                "decoder_kernel_size": 7,
                "decoder_channels": 512,
                **{f"decoder_{key}": value for key, value in _HIFIGAN_DECODER.items()},
                "use_weight_norm_in_decoder": True,
                "posterior_encoder_kernel_size": 5,
                "posterior_encoder_layers": 16,
                "posterior_encoder_stacks": 1,
                "posterior_encoder_base_dilation": 1,
                "posterior_encoder_dropout_rate": 0.0,
                "use_weight_norm_in_posterior_encoder": True,
                "flow_flows": 4,
                "flow_kernel_size": 5,
                "flow_base_dilation": 1,
                "flow_layers": 4,
                "flow_dropout_rate": 0.0,
                "use_weight_norm_in_flow": True,
                "use_only_mean_in_flow": True,
                "stochastic_duration_predictor_kernel_size": 3,
                "stochastic_duration_predictor_dropout_rate": 0.5,
                "stochastic_duration_predictor_flows": 4,
                "stochastic_duration_predictor_dds_conv_layers": 3,
            },
            **_HIFIGAN_DISCRIMINATOR,
            "sampling_rate": LJSPEECH_FS,
        },
        "feats_extract": "linear_spectrogram",
        "feats_extract_conf": LJSPEECH_STFT,
    },
)
# Conformer FastSpeech2 and a HiFi-GAN generator trained jointly (espnet2's JointText2Wav).
JOINT_FASTSPEECH2_HIFIGAN_LJSPEECH = Recipe(
    f"{LJSPEECH_TTS}train_joint_conformer_fastspeech2_hifigan.yaml",
    {
        "tts": "joint_text2wav",
        "tts_conf": {
            "text2mel_type": "fastspeech2",
            "text2mel_params": {
                "adim": 384,
                "aheads": 2,
                "elayers": 4,
                "eunits": 1536,
                "dlayers": 4,
                "dunits": 1536,
                "positionwise_layer_type": "conv1d",
                "positionwise_conv_kernel_size": 3,
                "duration_predictor_layers": 2,
                "duration_predictor_chans": 256,
                "duration_predictor_kernel_size": 3,
                "postnet_layers": 5,
                "postnet_filts": 5,
                "postnet_chans": 256,
                "use_masking": True,
                "encoder_normalize_before": True,
                "decoder_normalize_before": True,
                "reduction_factor": 1,
                "encoder_type": "conformer",
                "decoder_type": "conformer",
                "conformer_rel_pos_type": "latest",
                "conformer_pos_enc_layer_type": "rel_pos",
                "conformer_self_attn_layer_type": "rel_selfattn",
                "conformer_activation_type": "swish",
                "use_macaron_style_in_conformer": True,
                "use_cnn_in_conformer": True,
                "conformer_enc_kernel_size": 7,
                "conformer_dec_kernel_size": 31,
                "init_type": "xavier_uniform",
                "pitch_predictor_layers": 5,
                "pitch_predictor_chans": 256,
                "pitch_predictor_kernel_size": 5,
                "pitch_predictor_dropout": 0.5,
                "pitch_embed_kernel_size": 1,
                "pitch_embed_dropout": 0.0,
                "stop_gradient_from_pitch_predictor": True,
                "energy_predictor_layers": 2,
                "energy_predictor_chans": 256,
                "energy_predictor_kernel_size": 3,
                "energy_predictor_dropout": 0.5,
                "energy_embed_kernel_size": 1,
                "energy_embed_dropout": 0.0,
                "stop_gradient_from_energy_predictor": False,
            },
            "vocoder_type": "hifigan_generator",
            "vocoder_params": {
                "out_channels": 1,
                "channels": 512,
                "global_channels": -1,
                "kernel_size": 7,
                **_HIFIGAN_DECODER,
                "use_additional_convs": True,
                "bias": True,
                "nonlinear_activation": "LeakyReLU",
                "nonlinear_activation_params": {"negative_slope": 0.1},
                "use_weight_norm": True,
            },
            **_HIFIGAN_DISCRIMINATOR,
            "sampling_rate": LJSPEECH_FS,
            "segment_size": 32,
        },
        "feats_extract": "fbank",
        "feats_extract_conf": {
            **LJSPEECH_STFT,
            "fs": LJSPEECH_FS,
            "n_mels": 80,
            "fmin": 80,
            "fmax": 7600,
        },
        "pitch_extract": "dio",
        "pitch_extract_conf": {"reduction_factor": 1},
        "energy_extract": "energy",
        "energy_extract_conf": {"reduction_factor": 1},
    },
)
# Test sizes of the synthesis recipes: narrower, shallower, every kind of layer kept.
TTS_CI_SIZES: dict[str, Any] = {
    "hidden_channels": 32,
    "text_encoder_blocks": 1,
    "decoder_channels": 32,
    "posterior_encoder_layers": 2,
    "flow_flows": 1,
    "flow_layers": 1,
    "stochastic_duration_predictor_flows": 1,
    "adim": 32,
    "elayers": 1,
    "eunits": 64,
    "dlayers": 1,
    "dunits": 64,
    "duration_predictor_chans": 32,
    "postnet_layers": 2,
    "postnet_chans": 32,
    "pitch_predictor_layers": 2,
    "pitch_predictor_chans": 32,
    "energy_predictor_chans": 32,
    "channels": 16,  # HiFi-GAN generator and discriminators
    "max_downsample_channels": 32,
    "max_groups": 4,
}


def reduced_tts(recipe: Recipe) -> Recipe:
    """A synthesis recipe at the size tests build (:data:`TTS_CI_SIZES`), other options kept."""
    return Recipe(recipe.config, _cut(recipe.options, TTS_CI_SIZES))


# Speech enhancement and separation (espnet2's EnhancementTask): the model options of two
# recipes; their loss options (``model_conf.loss_type``) are training only.
WSJ0_2MIX_ENH = "egs2/wsj0_2mix/enh1/conf/tuning/"
CONV_TASNET_WSJ0_2MIX = Recipe(  # two speakers apart, 8 kHz
    f"{WSJ0_2MIX_ENH}train_enh_conv_tasnet.yaml",
    {
        "encoder": "conv",
        "encoder_conf": {"channel": 256, "kernel_size": 20, "stride": 10},
        "decoder": "conv",
        "decoder_conf": {"channel": 256, "kernel_size": 20, "stride": 10},
        "separator": "tcn",
        "separator_conf": {
            "num_spk": 2,
            "layer": 8,
            "stack": 4,
            "bottleneck_dim": 256,
            "hidden_dim": 512,
            "kernel": 3,
            "causal": False,
            "norm_type": "gLN",
            "nonlinear": "relu",
        },
    },
)
BLSTM_TF_DNS_INS20 = Recipe(  # one speaker out of the noise, 16 kHz
    "egs2/dns_ins20/enh1/conf/tuning/train_enh_blstm_tf.yaml",
    {
        "encoder": "stft",
        "encoder_conf": {"n_fft": 256, "hop_length": 128},
        "decoder": "stft",
        "decoder_conf": {"n_fft": 256, "hop_length": 128},
        "separator": "rnn",
        "separator_conf": {
            "rnn_type": "blstm",
            "num_spk": 1,
            "nonlinear": "relu",
            "layer": 3,
            "unit": 896,
            "dropout": 0.5,
        },
    },
)
ENH_CI_SIZES: dict[str, Any] = {
    "channel": 32,
    "layer": 2,
    "stack": 1,
    "bottleneck_dim": 32,
    "hidden_dim": 64,
    "unit": 64,
}


def reduced_enh(recipe: Recipe) -> Recipe:
    """An enhancement recipe at the size tests build (:data:`ENH_CI_SIZES`), other options kept."""
    return Recipe(recipe.config, _cut(recipe.options, ENH_CI_SIZES))
