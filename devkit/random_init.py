"""Random-initialised espnet2 ASR experiments, for tests and benchmarks.

Writes what espnet2 training leaves behind (``config.yaml`` + weights), built
with espnet2's own ``ASRTask`` (or ``ASRTransducerTask``, ``LMTask``), so
``Speech2Text`` and every loader treat it as a real model. Its hypotheses are
meaningless; its shapes and code paths are real.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from espnet_serve.backends.offline import block_runtime_downloads, training_only_stand_ins

CHAR_TOKENS: tuple[str, ...] = (
    "<blank>",
    "<unk>",
    *"abcdefghijklmnopqrstuvwxyz'",
    "<space>",
    "<sos/eos>",
)

TINY_ENCODER: dict[str, Any] = {
    "output_size": 64,
    "attention_heads": 2,
    "linear_units": 128,
    "num_blocks": 2,
    "input_layer": "conv2d",
}
TINY_DECODER: dict[str, Any] = {"attention_heads": 2, "linear_units": 128, "num_blocks": 1}


@dataclass(frozen=True)
class AsrExperiment:
    """Paths of a written experiment: ``asr_train_config`` and ``asr_model_file``."""

    asr_train_config: Path
    asr_model_file: Path


def write_random_asr_experiment(
    out_dir: Path,
    *,
    token_list: Sequence[str] = CHAR_TOKENS,
    encoder: str = "transformer",
    encoder_conf: Mapping[str, Any] = TINY_ENCODER,
    decoder: str = "transformer",
    decoder_conf: Mapping[str, Any] = TINY_DECODER,
    joint_net_conf: Mapping[str, Any] | None = None,
    n_mels: int = 40,
    ctc_weight: float = 0.5,
    token_type: str = "char",
    global_mvn_stats: str | None = None,
    seed: int = 0,
) -> AsrExperiment:
    """Build a random-initialised espnet2 ASR model and save it like a trained one.

    Args:
        out_dir: Directory for ``config.yaml`` and ``model.pth``.
        token_list: Output vocabulary (``<blank>`` first, ``<sos/eos>`` last).
        encoder: espnet2 encoder name (``transformer``, ``conformer``, ...).
        encoder_conf: Encoder options.
        decoder: espnet2 decoder name.
        decoder_conf: Decoder options.
        joint_net_conf: Joint network options (``decoder="transducer"``).
        n_mels: Mel filterbank size of the default frontend.
        ctc_weight: Training-time CTC weight recorded in ``model_conf``.
        token_type: ``char`` or ``word`` (how tokens join into text).
        global_mvn_stats: A ``feats_stats.npz`` (:func:`write_feats_stats`): ``normalize:
            global_mvn`` with that ``stats_file``, as recipes train (default: utterance MVN).
            Recorded as given: a relative path is read from the current directory, as
            espnet2 reads it in a recipe folder.
        seed: Torch seed for the initial weights.

    Returns:
        AsrExperiment: The written config and weights.
    """
    import torch

    block_runtime_downloads()
    from espnet2.tasks.asr import ASRTask

    args = ASRTask.get_parser().parse_args(["--output_dir", str(out_dir)])
    _set_front(args, token_list, n_mels, token_type)
    args.encoder, args.encoder_conf = encoder, dict(encoder_conf)
    args.decoder, args.decoder_conf = decoder, dict(decoder_conf)
    if joint_net_conf is not None:
        args.joint_net_conf = dict(joint_net_conf)
    args.model_conf = {"ctc_weight": ctc_weight}
    if global_mvn_stats is not None:
        args.normalize, args.normalize_conf = "global_mvn", {"stats_file": global_mvn_stats}
    args.seed = seed

    torch.manual_seed(seed)
    with training_only_stand_ins():
        model = ASRTask.build_model(args)
    return _save(out_dir, args, model)


def write_feats_stats(path: Path, n_mels: int = 40, seed: int = 0) -> Path:
    """Write a ``feats_stats.npz`` as espnet2's ``collect_stats`` does, for random statistics.

    Its ``count``, ``sum`` and ``sum_square`` give a mean and variance drawn at random.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    count = 1000
    mean, var = rng.normal(size=n_mels), rng.uniform(0.5, 2.0, size=n_mels)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, count=np.array(count), sum=mean * count, sum_square=(var + mean**2) * count)
    return path


def write_random_transducer_experiment(
    out_dir: Path,
    *,
    encoder_conf: Mapping[str, Any],
    decoder: str = "rnn",
    decoder_conf: Mapping[str, Any],
    joint_network_conf: Mapping[str, Any],
    model_conf: Mapping[str, Any] | None = None,
    token_list: Sequence[str] = CHAR_TOKENS,
    n_mels: int = 40,
    token_type: str = "char",
    seed: int = 0,
) -> AsrExperiment:
    """Build a random-initialised ``espnet2.asr_transducer`` model and save it like a trained one.

    Args:
        out_dir: Directory for ``config.yaml`` and ``model.pth``.
        encoder_conf: The encoder's ``main_conf``, ``input_conf`` and ``body_conf``.
        decoder: espnet2.asr_transducer decoder name (``rnn``, ``stateless``, ...).
        decoder_conf: Decoder options.
        joint_network_conf: Joint network options.
        model_conf: Model options (``transducer_weight``, ``auxiliary_ctc_weight``, ...).
        token_list: Output vocabulary (``<blank>`` first).
        n_mels: Mel filterbank size of the default frontend.
        token_type: ``char`` or ``word`` (how tokens join into text).
        seed: Torch seed for the initial weights.

    Returns:
        AsrExperiment: The written config and weights.
    """
    import torch

    block_runtime_downloads()
    from espnet2.tasks.asr_transducer import ASRTransducerTask

    args = ASRTransducerTask.get_parser().parse_args(["--output_dir", str(out_dir)])
    _set_front(args, token_list, n_mels, token_type)
    args.encoder_conf = dict(encoder_conf)
    args.decoder, args.decoder_conf = decoder, dict(decoder_conf)
    args.joint_network_conf = dict(joint_network_conf)
    args.model_conf = dict(model_conf or {})
    args.seed = seed
    torch.manual_seed(seed)
    with training_only_stand_ins():
        model = ASRTransducerTask.build_model(args)
    return _save(out_dir, args, model)


def write_random_st_experiment(
    out_dir: Path,
    *,
    token_list: Sequence[str] = CHAR_TOKENS,
    src_token_list: Sequence[str] = CHAR_TOKENS,
    encoder: str,
    encoder_conf: Mapping[str, Any],
    decoder: str = "transformer",
    decoder_conf: Mapping[str, Any],
    extra_asr_decoder: str | None = None,
    extra_asr_decoder_conf: Mapping[str, Any] | None = None,
    extra_mt_decoder: str | None = None,
    extra_mt_decoder_conf: Mapping[str, Any] | None = None,
    model_conf: Mapping[str, Any] | None = None,
    n_mels: int = 40,
    token_type: str = "char",
    seed: int = 0,
) -> AsrExperiment:
    """Build a random-initialised espnet2 speech translation model and save it like a trained one.

    Args:
        out_dir: Directory for ``config.yaml`` and ``model.pth``.
        token_list: The target (translation) vocabulary.
        src_token_list: The source (transcript) vocabulary of the auxiliary CTC and decoders.
        encoder: espnet2 encoder name.
        encoder_conf: Encoder options.
        decoder: The translation decoder's name.
        decoder_conf: Its options.
        extra_asr_decoder: An auxiliary transcript decoder (training only at ``mtlalpha: 1``).
        extra_asr_decoder_conf: Its options.
        extra_mt_decoder: An auxiliary text-to-text decoder (training only at ``mt_weight: 0``).
        extra_mt_decoder_conf: Its options.
        model_conf: Model options (``asr_weight``, ``mt_weight``, ``mtlalpha``, ...).
        n_mels: Mel filterbank size of the default frontend.
        token_type: ``char`` or ``word``, of both vocabularies.
        seed: Torch seed for the initial weights.

    Returns:
        AsrExperiment: The written config (``asr_train_config``: the ST model's) and weights.
    """
    import torch

    block_runtime_downloads()
    from espnet2.tasks.st import STTask

    args = STTask.get_parser().parse_args(["--output_dir", str(out_dir)])
    _set_front(args, token_list, n_mels, token_type)
    args.src_token_list, args.src_token_type = list(src_token_list), token_type
    args.encoder, args.encoder_conf = encoder, dict(encoder_conf)
    args.decoder, args.decoder_conf = decoder, dict(decoder_conf)
    args.extra_asr_decoder = extra_asr_decoder
    args.extra_asr_decoder_conf = dict(extra_asr_decoder_conf or {})
    args.extra_mt_decoder = extra_mt_decoder
    args.extra_mt_decoder_conf = dict(extra_mt_decoder_conf or {})
    args.model_conf = dict(model_conf or {})
    args.seed = seed
    torch.manual_seed(seed)
    return _save(out_dir, args, STTask.build_model(args))


# OWSM's vocabulary around its text tokens, in OWSM v3.1's order: <blank> <unk> <na> <nospeech>
# (and OWSM-CTC's <nolang>), the language tokens <abk> ... <zul>, the task tokens <asr> and
# <st_xxx>, <notimestamps> and the time tokens <0.00> ... <30.00> (every 20 ms), the text,
# then <sos> <eos> <sop>.
OWSM_TRANSLATION_TARGETS: tuple[str, ...] = (
    # Into English, and from English into CoVoST 2's and MuST-C's target languages.
    *("eng", "deu", "cat", "zho", "fas", "est", "mon", "tur", "ara", "swe", "lav", "slv"),
    *("tam", "jpn", "ind", "cym", "spa", "fra", "ita", "nld", "por", "ron", "rus"),
)


def owsm_token_list(text_tokens: Sequence[str]) -> list[str]:
    """OWSM's vocabulary with ``text_tokens`` as its text.

    The language tokens are every ISO-639-3 code with an ISO-639-1 code (pycountry) from
    ``<abk>`` to ``<zul>``, the range espnet2's ``Speech2Language`` reads (OWSM v3.1 has 151
    languages there, some without a two-letter code).
    """
    import pycountry

    languages = sorted(
        language.alpha_3 for language in pycountry.languages if hasattr(language, "alpha_2")
    )
    return [
        *("<blank>", "<unk>", "<na>", "<nospeech>", "<nolang>"),
        *(f"<{code}>" for code in languages if "abk" <= code <= "zul"),
        "<asr>",
        *(f"<st_{code}>" for code in sorted(OWSM_TRANSLATION_TARGETS)),
        "<notimestamps>",
        *(f"<{step * 0.02:.2f}>" for step in range(1501)),
        *text_tokens,
        *("<sos>", "<eos>", "<sop>"),
    ]


def write_random_s2t_experiment(
    out_dir: Path,
    *,
    token_list: Sequence[str],
    token_type: str = "char",
    preprocessor: str,
    preprocessor_conf: Mapping[str, Any],
    encoder: str,
    encoder_conf: Mapping[str, Any],
    decoder: str | None = None,
    decoder_conf: Mapping[str, Any] | None = None,
    promptencoder: str | None = None,
    promptencoder_conf: Mapping[str, Any] | None = None,
    model: str = "espnet",
    model_conf: Mapping[str, Any],
    n_mels: int = 80,
    seed: int = 0,
) -> AsrExperiment:
    """Build a random-initialised OWSM model (espnet2's ``S2TTask``) and save it like a trained one.

    Args:
        out_dir: Directory for ``config.yaml`` and ``model.pth``.
        token_list: The vocabulary (:func:`owsm_token_list`).
        token_type: ``char`` or ``word``.
        preprocessor: ``s2t`` (attention) or ``s2t_ctc``.
        preprocessor_conf: Its options (30 s inputs, the symbols).
        encoder: espnet2 encoder name (``e_branchformer``, ``e_branchformer_ctc``).
        encoder_conf: Encoder options.
        decoder: The attention decoder (``None`` for OWSM-CTC).
        decoder_conf: Its options.
        promptencoder: OWSM-CTC's prompt encoder.
        promptencoder_conf: Its options.
        model: ``espnet`` (attention) or ``espnet_ctc`` (``espnet2.tasks.s2t_ctc``).
        model_conf: Model options.
        n_mels: Mel filterbank size (OWSM: 80).
        seed: Torch seed for the initial weights.

    Returns:
        AsrExperiment: The written config (``asr_train_config``: the S2T model's) and weights.
    """
    import importlib

    import torch

    block_runtime_downloads()
    task = importlib.import_module(
        "espnet2.tasks.s2t_ctc" if model == "espnet_ctc" else "espnet2.tasks.s2t"
    ).S2TTask
    args = task.get_parser().parse_args(["--output_dir", str(out_dir)])
    _set_front(args, token_list, n_mels, token_type)
    args.frontend_conf = {**args.frontend_conf, "win_length": 400, "fs": 16000}
    args.preprocessor, args.preprocessor_conf = preprocessor, dict(preprocessor_conf)
    args.encoder, args.encoder_conf = encoder, dict(encoder_conf)
    if decoder is not None:
        args.decoder, args.decoder_conf = decoder, dict(decoder_conf or {})
    if promptencoder is not None:
        args.promptencoder, args.promptencoder_conf = promptencoder, dict(promptencoder_conf or {})
    args.model, args.model_conf = model, dict(model_conf)
    args.seed = seed
    torch.manual_seed(seed)
    with training_only_stand_ins():
        built = task.build_model(args)
    return _save(out_dir, args, built)


# A character vocabulary for the synthesis recipes (``cleaner: tacotron`` writes capitals).
TTS_CHAR_TOKENS: tuple[str, ...] = (
    "<blank>",
    "<unk>",
    *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'.,?!-",
    "<space>",
    "<sos/eos>",
)
# espnet2's GAN-TTS task trains these (text to waveform, no separate vocoder).
GAN_TTS_MODELS = ("vits", "joint_text2wav", "jets")


def write_random_tts_experiment(
    out_dir: Path,
    *,
    tts: str,
    tts_conf: Mapping[str, Any],
    feats_extract: str,
    feats_extract_conf: Mapping[str, Any],
    token_list: Sequence[str] = TTS_CHAR_TOKENS,
    seed: int = 0,
    **extract: Any,
) -> AsrExperiment:
    """Build a random-initialised espnet2 speech synthesis model and save it like a trained one.

    Characters (``token_type: char``, ``cleaner: tacotron``) stand in for the recipes'
    phonemes: ``g2p_en`` needs nltk data that no package ships. No feature normaliser: a
    synthesis never uses it.

    Args:
        out_dir: Directory for ``config.yaml`` and ``model.pth``.
        tts: espnet2's model name (``vits``, ``joint_text2wav``: espnet2's GAN-TTS task;
            others: its TTS task).
        tts_conf: Its options.
        feats_extract: The training features (``linear_spectrogram``, ``fbank``).
        feats_extract_conf: Their options.
        token_list: The vocabulary.
        seed: Torch seed for the initial weights.
        **extract: ``pitch_extract``, ``energy_extract`` and their ``*_conf`` (FastSpeech2).

    Returns:
        AsrExperiment: The written config (``asr_train_config``: the TTS model's) and weights.
    """
    import importlib

    import torch

    block_runtime_downloads()
    module = "espnet2.tasks.gan_tts" if tts in GAN_TTS_MODELS else "espnet2.tasks.tts"
    task = getattr(importlib.import_module(module), "GANTTSTask" if "gan" in module else "TTSTask")
    args = task.get_parser().parse_args(["--output_dir", str(out_dir)])
    args.token_list, args.token_type = list(token_list), "char"
    args.cleaner, args.g2p = "tacotron", None
    args.tts, args.tts_conf = tts, dict(tts_conf)
    args.feats_extract, args.feats_extract_conf = feats_extract, dict(feats_extract_conf)
    args.normalize, args.normalize_conf = None, {}
    for name, value in extract.items():
        setattr(args, name, dict(value) if isinstance(value, Mapping) else value)
    args.seed = seed
    torch.manual_seed(seed)
    return _save(out_dir, args, task.build_model(args))


def write_random_enh_experiment(
    out_dir: Path,
    *,
    encoder: str,
    encoder_conf: Mapping[str, Any],
    decoder: str,
    decoder_conf: Mapping[str, Any],
    separator: str,
    separator_conf: Mapping[str, Any],
    seed: int = 0,
) -> AsrExperiment:
    """Build a random-initialised espnet2 enhancement or separation model and save it.

    Args:
        out_dir: Directory for ``config.yaml`` and ``model.pth``.
        encoder: espnet2's encoder name (``conv``, ``stft``).
        encoder_conf: Its options.
        decoder: The decoder's name.
        decoder_conf: Its options.
        separator: The separator's name (``tcn``, ``rnn``, ...).
        separator_conf: Its options (``num_spk``: how many tracks come out).
        seed: Torch seed for the initial weights.

    Returns:
        AsrExperiment: The written config (``asr_train_config``: the model's) and weights.
    """
    import torch

    block_runtime_downloads()
    from espnet2.tasks.enh import EnhancementTask

    args = EnhancementTask.get_parser().parse_args(["--output_dir", str(out_dir)])
    args.encoder, args.encoder_conf = encoder, dict(encoder_conf)
    args.decoder, args.decoder_conf = decoder, dict(decoder_conf)
    args.separator, args.separator_conf = separator, dict(separator_conf)
    args.seed = seed
    torch.manual_seed(seed)
    return _save(out_dir, args, EnhancementTask.build_model(args))


def sharpen(model_file: Path, keys: Sequence[str], factor: float) -> None:
    """Scale the weights ``keys`` (output projections) of a saved model by ``factor``.

    Random weights give near-uniform posteriors; scaled output projections make them peaked, as
    a trained model's are, so that answers depend on the audio and floating-point noise cannot
    flip them. Keys the model does not have are skipped.
    """
    import torch

    state = torch.load(model_file, map_location="cpu")
    for key in keys:
        if key in state:
            state[key] = state[key] * factor
    torch.save(state, model_file)


def _set_front(args: Any, token_list: Sequence[str], n_mels: int, token_type: str) -> None:
    """Vocabulary and token type, fbank front end, utterance MVN, no SpecAugment."""
    args.token_list = list(token_list)
    args.token_type = token_type
    args.input_size = None
    args.frontend = "default"
    args.frontend_conf = {"n_fft": 512, "hop_length": 160, "n_mels": n_mels}
    args.specaug = None
    args.normalize = "utterance_mvn"
    args.normalize_conf = {}


def _save(out_dir: Path, args: Any, model: Any) -> AsrExperiment:
    """Write ``config.yaml`` and ``model.pth`` as espnet2 training leaves them."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    experiment = AsrExperiment(out_dir / "config.yaml", out_dir / "model.pth")
    experiment.asr_train_config.write_text(yaml.safe_dump(vars(args)), encoding="utf-8")
    torch.save(model.state_dict(), experiment.asr_model_file)
    return experiment


@dataclass(frozen=True)
class LmExperiment:
    """Paths of a written language model: ``lm_train_config`` and ``lm_file``."""

    lm_train_config: Path
    lm_file: Path


def write_random_lm_experiment(
    out_dir: Path,
    *,
    token_list: Sequence[str] = CHAR_TOKENS,
    lm: str = "transformer",
    lm_conf: Mapping[str, Any],
    token_type: str = "char",
    seed: int = 0,
) -> LmExperiment:
    """Build a random-initialised espnet2 language model and save it like a trained one.

    Args:
        out_dir: Directory for ``config.yaml`` and ``model.pth``.
        token_list: The vocabulary (the ASR model's).
        lm: espnet2 LM name (``transformer``, ``seq_rnn``).
        lm_conf: LM options.
        token_type: The ASR model's token type.
        seed: Torch seed for the initial weights.

    Returns:
        LmExperiment: The written config and weights.
    """
    import torch

    block_runtime_downloads()
    from espnet2.tasks.lm import LMTask

    args = LMTask.get_parser().parse_args(["--output_dir", str(out_dir)])
    args.token_list = list(token_list)
    args.token_type = token_type
    args.lm, args.lm_conf = lm, dict(lm_conf)
    args.seed = seed
    torch.manual_seed(seed)
    model = LMTask.build_model(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    experiment = LmExperiment(out_dir / "config.yaml", out_dir / "model.pth")
    experiment.lm_train_config.write_text(yaml.safe_dump(vars(args)), encoding="utf-8")
    torch.save(model.state_dict(), experiment.lm_file)
    return experiment
