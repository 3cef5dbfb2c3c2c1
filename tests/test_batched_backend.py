"""BatchedSpeech2Text: equivalence with Speech2Text, per-sample errors, session integration.

Equivalence runs on the embedded default model and its held-out speech; the
building blocks, error handling and session tests use random-init models.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from espnet.nets.ctc_prefix_score import CTCPrefixScoreTH
from espnet2.bin.asr_inference import Speech2Text

from devkit.publish import write_bundle
from devkit.random_init import (
    AsrExperiment,
    write_random_asr_experiment,
    write_random_lm_experiment,
)
from devkit.recipes import LIBRISPEECH_100_E_BRANCHFORMER, LIBRISPEECH_100_TRANSFORMER_LM, reduced
from espnet_serve import InferenceSession
from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE, load_heldout
from espnet_serve.backends import BatchedSpeech2Text, SampleError
from espnet_serve.backends.beam_search import (
    BatchJointSearch,
    SearchOptions,
    check_lm_supported,
    settled,
)
from espnet_serve.backends.bucketing import length_buckets
from espnet_serve.backends.ctc_prefix import BatchCTCPrefixScorer
from espnet_serve.backends.encoding import encode_padded, extract_features
from espnet_serve.bundle.archive import safe_extract
from espnet_serve.bundle.layout import artifacts_from_directory

BEAM = {"beam_size": 4, "ctc_weight": 0.3, "maxlenratio": 0.3}
SMALL_CONFORMER = {
    "output_size": 64,
    "attention_heads": 2,
    "linear_units": 128,
    "num_blocks": 2,
    "input_layer": "conv2d",
    "pos_enc_layer_type": "rel_pos",
    "selfattention_layer_type": "rel_selfattn",
    "rel_pos_type": "latest",
    "macaron_style": True,
    "use_cnn_module": True,
    "cnn_module_kernel": 15,
}

# egs2/librispeech_100/asr1/conf/tuning/train_asr_e_branchformer_size256_mlp1024_linear1024_e12_
# mactrue_edrop0.0_ddrop0.0.yaml's encoder, its options as they are, its sizes reduced.
SMALL_E_BRANCHFORMER = reduced(LIBRISPEECH_100_E_BRANCHFORMER).options["encoder_conf"]


def noise_clips(count: int, seed: int = 0) -> list[np.ndarray]:
    """Quiet noise of mixed lengths (0.25 s to 3 s at 16 kHz)."""
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal(int(n)) * 0.05).astype(np.float32)
        for n in rng.integers(4000, 48000, size=count)
    ]


def token_ids(nbest: list) -> list[list[int]]:
    return [entry[2] for entry in nbest]


@pytest.fixture(scope="module")
def conformer_experiment(tmp_path_factory: pytest.TempPathFactory) -> AsrExperiment:
    return write_random_asr_experiment(
        tmp_path_factory.mktemp("conformer"), encoder="conformer", encoder_conf=SMALL_CONFORMER
    )


def build(experiment: AsrExperiment, **options: object) -> BatchedSpeech2Text:
    return BatchedSpeech2Text(experiment.asr_train_config, experiment.asr_model_file, **options)


def reference(experiment: AsrExperiment, **options: object) -> Speech2Text:
    return Speech2Text(experiment.asr_train_config, experiment.asr_model_file, **options)


# ------------------------------------------------------------------ building blocks


def test_length_buckets_sort_and_bound():
    lengths = [5, 9, 1, 9, 3, 7]
    assert length_buckets(lengths, 2) == [[1, 3], [5, 0], [4, 2]]
    assert length_buckets(lengths, 4, max_bucket_samples=20) == [[1, 3], [5, 0], [4, 2]]
    assert length_buckets([30, 2], 4, max_bucket_samples=10) == [[0], [1]]
    with pytest.raises(ValueError, match="max_bucket_size"):
        length_buckets(lengths, 0)


@pytest.fixture(scope="module")
def e_branchformer_experiment(tmp_path_factory: pytest.TempPathFactory) -> AsrExperiment:
    return write_random_asr_experiment(
        tmp_path_factory.mktemp("e_branchformer"),
        encoder="e_branchformer",
        encoder_conf=SMALL_E_BRANCHFORMER,
    )


@pytest.mark.parametrize("encoder", ["transformer", "conformer", "e_branchformer"])
def test_padded_encoding_equals_single_utterance_encoding(encoder, request: pytest.FixtureRequest):
    experiment = request.getfixturevalue(
        "tiny_experiment" if encoder == "transformer" else f"{encoder}_experiment"
    )
    model = reference(experiment).asr_model
    waves = [torch.from_numpy(w) for w in noise_clips(5)]
    with torch.inference_mode():
        enc, lengths = encode_padded(model, [extract_features(model, w) for w in waves])
        for row, wave in enumerate(waves):
            single, single_len = model.encode(wave[None], torch.tensor([len(wave)]))
            assert int(lengths[row]) == int(single_len[0]) == single.size(1)
            torch.testing.assert_close(enc[row, : single.size(1)], single[0], atol=1e-4, rtol=0)


# espnet2's RNN encoders (an4's and other small recipes use them): encoder: rnn packs
# sequences, exact in a padded batch; vgg_rnn's VGG front layer has padded convolutions
# that read past an utterance's end, so a padded batch changes its output.
RNN_ENCODERS = {
    "rnn": {"rnn_type": "lstm", "num_layers": 2, "hidden_size": 64, "output_size": 64},
    "vgg_rnn": {"rnn_type": "lstm", "num_layers": 2, "hidden_size": 64, "output_size": 64},
}


@pytest.fixture(scope="module")
def rnn_experiments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, AsrExperiment]:
    root = tmp_path_factory.mktemp("rnn_encoders")
    return {
        name: write_random_asr_experiment(root / name, encoder=name, encoder_conf=conf)
        for name, conf in RNN_ENCODERS.items()
    }


def test_an_rnn_encoder_is_batched_and_exact(rnn_experiments, heldout):
    experiment = rnn_experiments["rnn"]
    clips = heldout[:14]
    ours = in_calls(build(experiment, max_bucket_size=7, **BEAM), clips, 7)
    s2t = reference(experiment, **BEAM)
    assert [token_ids(o) for o in ours] == [token_ids(s2t(c)) for c in clips]


def test_an_encoder_a_padded_batch_changes_is_not_batched(rnn_experiments, heldout, tmp_path):
    """The self-check at construction: vgg_rnn is refused, and served as Speech2Text serves it."""
    experiment = rnn_experiments["vgg_rnn"]
    with pytest.raises(NotImplementedError, match="A padded batch changes this model's encoder"):
        build(experiment, **BEAM)
    bundle = write_bundle(
        tmp_path / "bundle",
        asr_train_config=experiment.asr_train_config,
        asr_model_file=experiment.asr_model_file,
        decoding=BEAM,
    )
    session = InferenceSession.from_pretrained(
        str(bundle), batched_backend=True, prefer_model_batch=True
    )
    assert isinstance(session.model, Speech2Text)
    clips = heldout[:6]
    s2t = reference(experiment, **BEAM)
    assert [token_ids(o) for o in session.forward_batch(clips)] == [
        token_ids(s2t(c)) for c in clips
    ]


def test_a_time_convolution_the_padding_fixes_do_not_know_is_caught(
    conformer_experiment, monkeypatch
):
    """An encoder layer the fixes of encoding.py miss (here: all of them) is refused."""
    build(conformer_experiment, **BEAM)
    monkeypatch.setattr("espnet_serve.backends.encoding._LAYER_MODULES", ())
    with pytest.raises(NotImplementedError, match="A padded batch changes"):
        build(conformer_experiment, **BEAM)


def test_ctc_prefix_scorer_matches_espnet_per_utterance():
    """Our batched scorer on padded utterances == CTCPrefixScoreTH on each utterance alone."""
    torch.manual_seed(0)
    vocab, slots, eos, lengths = 12, 3, 11, [9, 14, 6]
    logp = torch.randn(len(lengths), max(lengths), vocab).log_softmax(-1)
    ours = BatchCTCPrefixScorer(logp, torch.tensor(lengths), blank=0, eos=eos)
    row_utt = torch.arange(len(lengths)).repeat_interleave(slots)
    state = ours.initial_state(row_utt)
    refs = [
        CTCPrefixScoreTH(logp[b : b + 1, :n].clone(), torch.tensor([n]), 0, eos)
        for b, n in enumerate(lengths)
    ]
    ref_states: list = [None] * len(lengths)
    ys = torch.full((len(lengths) * slots, 1), eos)
    for step in range(4):
        ids = torch.stack(
            [torch.randperm(vocab - 1)[:5] for _ in range(ys.size(0))]
        )  # may hold blank
        scores = ours.score(state, ys[:, -1], step, ids, row_utt)
        parents, columns, tokens = [], [], []
        for b in range(len(lengths)):
            rows = slice(b * slots, (b + 1) * slots)
            ref_local, ref_state = refs[b](ys[rows], ref_states[b], ids[rows])
            expected = torch.cat([ref_local.gather(1, ids[rows]), ref_local[:, eos : eos + 1]], 1)
            torch.testing.assert_close(scores.local[rows], expected, atol=1e-5, rtol=0)
            best = ref_local.view(-1).topk(slots)[1]
            ref_states[b] = refs[b].index_select_state(ref_state, best.view(1, -1))
            chosen = zip((best // vocab + b * slots).tolist(), (best % vocab).tolist(), strict=True)
            for parent, token in chosen:
                hit = (ids[parent] == token).nonzero().view(-1).tolist()
                parents.append(parent)
                columns.append(hit[0] if hit and token != eos else ids.size(1))
                tokens.append(token)
        state = ours.select(scores, torch.tensor(parents), torch.tensor(columns))
        ys = torch.cat([ys[parents], torch.tensor(tokens)[:, None]], dim=1)


# ------------------------------------------------------------------ equivalence
# On two real models and their held-out speech, each with a 2-best list: the embedded
# default model (conformer encoder, CTC only, word tokens) with its CTC prefix beam search,
# and the earlier embedded model (conformer encoder, transformer decoder, char tokens,
# trained on espeak-ng voices only; kept in tests/assets to check the attention decoder's
# beam search) with beam 4, CTC weight 0.3 and end detection.

HYBRID_ARCHIVE = Path(__file__).absolute().parent / "assets" / "digits_hybrid_char.tar.gz"
REAL_MODELS = {
    "default": (DEFAULT_MODEL_ARCHIVE, {"beam_size": 4, "ctc_weight": 1.0, "nbest": 2}),
    "hybrid": (HYBRID_ARCHIVE, {"beam_size": 4, "ctc_weight": 0.3, "nbest": 2}),
}
HELDOUT_CLIPS = None  # all 150 clips


def unpack(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> AsrExperiment:
    """The training config and weights of a packed bundle."""
    root = safe_extract(archive, tmp_path_factory.mktemp(archive.stem.split(".")[0]))
    artifacts = artifacts_from_directory(root)
    return AsrExperiment(Path(artifacts["asr_train_config"]), Path(artifacts["asr_model_file"]))


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory) -> AsrExperiment:
    return unpack(HYBRID_ARCHIVE, tmp_path_factory)


# make test-fast checks the default model at one batch size; make test every model and size.
@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=[] if name == "default" else pytest.mark.slow)
        for name in sorted(REAL_MODELS)
    ],
)
def real_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[AsrExperiment, dict]:
    archive, decoding = REAL_MODELS[request.param]
    return unpack(archive, tmp_path_factory), decoding


@pytest.fixture(scope="module")
def heldout() -> list[np.ndarray]:
    return [clip.read_audio(16000) for clip in load_heldout(HELDOUT_CLIPS)]


@pytest.fixture(scope="module")
def speech2text_nbest(real_model, heldout) -> list[list]:
    experiment, decoding = real_model
    s2t = reference(experiment, **decoding)
    return [s2t(clip) for clip in heldout]


BATCH_SIZES = [pytest.param(1, marks=pytest.mark.slow), 7, pytest.param(32, marks=pytest.mark.slow)]


def in_calls(backend: BatchedSpeech2Text, clips: list[np.ndarray], size: int) -> list:
    """Decode ``clips`` in calls of ``size`` samples (one bucket per call)."""
    out: list = []
    for start in range(0, len(clips), size):
        out += backend(clips[start : start + size])
    return out


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_beam_search_matches_speech2text(batch_size, real_model, heldout, speech2text_nbest):
    experiment, decoding = real_model
    backend = build(experiment, max_bucket_size=batch_size, **decoding)
    ours = in_calls(backend, heldout, batch_size)
    mismatches = {
        i: (token_ids(a), token_ids(b))
        for i, (a, b) in enumerate(zip(ours, speech2text_nbest, strict=True))
        if token_ids(a) != token_ids(b)
    }
    assert len(mismatches) <= 0.01 * len(heldout), mismatches
    for i, (a, b) in enumerate(zip(ours, speech2text_nbest, strict=True)):
        if i in mismatches:
            continue
        assert [entry[:3] for entry in a] == [entry[:3] for entry in b]
        for (*_, hyp), (*_, ref_hyp) in zip(a, b, strict=True):
            assert float(hyp.score) == pytest.approx(float(ref_hyp.score), abs=1e-4)
            assert hyp.scores.keys() == ref_hyp.scores.keys()
            assert torch.equal(hyp.yseq.cpu(), ref_hyp.yseq.cpu())


def test_the_search_stops_once_its_n_best_is_settled_with_the_same_answer(
    real_model, heldout, monkeypatch
):
    """An utterance whose n-best no running hypothesis can change stops early, same n-best."""
    experiment, decoding = real_model
    steps: list[int] = []
    select = BatchJointSearch._select

    def counted(self, *args, **kwargs):
        steps[-1] += 1
        return select(self, *args, **kwargs)

    search = BatchJointSearch._search

    def one_search(self, *args, **kwargs):
        steps.append(0)
        return search(self, *args, **kwargs)

    monkeypatch.setattr(BatchJointSearch, "_select", counted)
    monkeypatch.setattr(BatchJointSearch, "_search", one_search)
    backend = build(experiment, max_bucket_size=16, **decoding)
    early = in_calls(backend, heldout, 16)
    early_steps, steps[:] = list(steps), []
    full_options = replace(backend.options, stop_when_settled=False)
    backend.search = BatchJointSearch(backend.asr_model, full_options, backend.lm)
    full = in_calls(backend, heldout, 16)

    assert [[entry[:3] for entry in nbest] for nbest in early] == [
        [entry[:3] for entry in nbest] for nbest in full
    ]
    # Scores agree to float32 rounding: the decoder's matrices have fewer rows once
    # utterances leave the batch early.
    for nbest, full_nbest in zip(early, full, strict=True):
        for entry, full_entry in zip(nbest, full_nbest, strict=True):
            assert float(entry[3].score) == pytest.approx(float(full_entry[3].score), abs=1e-4)
    assert sum(early_steps) < sum(steps)


def test_settled_needs_the_nth_best_ended_above_every_running_hypothesis():
    assert settled([-1.0], -3.0, nbest=1)
    assert not settled([-1.0], -1.005, nbest=1)  # within float32 rounding: keep searching
    assert not settled([-1.0, -4.0], -3.0, nbest=2)  # the 2nd best can still be beaten
    assert settled([-1.0, -2.0], -3.0, nbest=2)
    assert not settled([], -3.0, nbest=1)


@pytest.mark.parametrize(
    ("change", "falls"),
    [
        ({}, True),
        ({"penalty": -0.5}, True),
        ({"penalty": 0.5}, False),  # a length bonus can raise a longer hypothesis
        ({"normalize_length": True}, False),  # ranks by score per token
    ],
)
def test_the_early_stop_is_only_used_where_scores_only_fall(change, falls):
    options = SearchOptions(
        beam_size=4,
        ctc_weight=0.3,
        penalty=0.0,
        lm_weight=0.5,
        maxlenratio=0.0,
        minlenratio=0.0,
        normalize_length=False,
        nbest=1,
        sos=9,
        eos=9,
        vocab_size=10,
    )
    assert replace(options, **change).scores_only_fall is falls


def test_beam_search_length_limits_penalty_and_normalisation(hybrid, heldout):
    """maxlen cut-off (<eos> appended at the last step), minlen, length bonus, normalisation."""
    options = {
        "beam_size": 3,
        "ctc_weight": 0.5,
        "penalty": 0.5,
        "maxlenratio": 0.35,
        "minlenratio": 0.1,
        "normalize_length": True,
    }
    clips = heldout[:14]
    s2t = reference(hybrid, **options)
    ours = in_calls(build(hybrid, max_bucket_size=7, **options), clips, 7)
    assert [token_ids(o) for o in ours] == [token_ids(s2t(c)) for c in clips]


# librispeech_100's conf/train_lm.yaml is a transformer LM; seq_rnn LMs (LSTM, GRU) are the
# other espnet2 language models. Reduced sizes, random weights, the trained hybrid's vocabulary.
LANGUAGE_MODELS = {
    "transformer": ("transformer", reduced(LIBRISPEECH_100_TRANSFORMER_LM).options["lm_conf"]),
    "lstm": ("seq_rnn", {"unit": 64, "nlayers": 2, "rnn_type": "lstm"}),
    "gru": ("seq_rnn", {"unit": 64, "nlayers": 1, "rnn_type": "gru"}),
}


@pytest.mark.parametrize("language_model", sorted(LANGUAGE_MODELS))
def test_language_model_fusion_matches_speech2text(language_model, hybrid, heldout, tmp_path):
    """Shallow fusion in the padded batch: Speech2Text's n-best, token ids and scorers."""
    name, conf = LANGUAGE_MODELS[language_model]
    config = yaml.safe_load(hybrid.asr_train_config.read_text())
    lm = write_random_lm_experiment(
        tmp_path / "lm", token_list=config["token_list"], lm=name, lm_conf=conf
    )
    options = {
        "beam_size": 4,
        "ctc_weight": 0.3,
        "lm_weight": 0.5,
        "nbest": 2,
        "lm_train_config": lm.lm_train_config,
        "lm_file": lm.lm_file,
    }
    clips = heldout[:21]
    backend = build(hybrid, max_bucket_size=7, **options)
    assert backend.lm is not None
    ours = in_calls(backend, clips, 7)
    s2t = reference(hybrid, **options)
    expected = [s2t(clip) for clip in clips]
    assert [[entry[:3] for entry in nbest] for nbest in ours] == [
        [entry[:3] for entry in nbest] for nbest in expected
    ]
    for nbest, ref_nbest in zip(ours, expected, strict=True):
        for (*_, hyp), (*_, ref_hyp) in zip(nbest, ref_nbest, strict=True):
            assert set(hyp.scores) == set(ref_hyp.scores) >= {"decoder", "ctc", "lm"}
            assert float(hyp.scores["lm"]) == pytest.approx(float(ref_hyp.scores["lm"]), abs=1e-3)


def test_language_model_weight_zero_decodes_without_it(tiny_experiment, clips, tmp_path):
    lm = write_random_lm_experiment(tmp_path / "lm", lm_conf=LANGUAGE_MODELS["transformer"][1])
    files = {"lm_train_config": lm.lm_train_config, "lm_file": lm.lm_file}
    backend = build(tiny_experiment, max_bucket_size=4, lm_weight=0.0, **files, **BEAM)
    assert backend.lm is None
    assert [token_ids(o) for o in backend(clips[:4])] == [
        token_ids(o) for o in build(tiny_experiment, max_bucket_size=4, **BEAM)(clips[:4])
    ]


def per_sample_greedy(model, clip: np.ndarray) -> list[int]:
    wave = torch.from_numpy(clip)[None]
    enc, _ = model.encode(wave, torch.tensor([wave.size(1)]))
    path = torch.unique_consecutive(model.ctc.argmax(enc)[0])
    return path[path != 0].tolist()


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_greedy_ctc_matches_per_sample_greedy(batch_size, real_model, heldout):
    backend = build(
        real_model[0],
        beam_size=1,
        ctc_weight=1.0,
        decoding="greedy_ctc",
        max_bucket_size=batch_size,
    )
    assert backend.greedy
    with torch.inference_mode():
        expected = [per_sample_greedy(backend.asr_model, clip) for clip in heldout]
    assert [o[0][2] for o in in_calls(backend, heldout, batch_size)] == expected


# ------------------------------------------------------------------ per-sample errors


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return noise_clips(12, seed=1)


def test_bad_samples_fail_alone(tiny_experiment, clips):
    backend = build(tiny_experiment, max_bucket_size=4, **BEAM)
    nan = clips[1].copy()
    nan[100] = np.nan
    batch = [
        clips[0],
        np.zeros(0, np.float32),
        nan,
        clips[2][:500],
        np.ones((2, 800)),
        clips[3],
        "x",
    ]
    out = backend(batch)
    assert len(out) == len(batch)
    reasons = {i: r.reason for i, r in enumerate(out) if isinstance(r, SampleError)}
    assert reasons == {
        1: "empty",
        2: "non-finite",
        3: "too short",
        4: "not a 1-D real waveform",
        6: "not a numeric array",
    }
    assert all(out[i].index == i for i in reasons)
    for i in (0, 5):
        assert token_ids(out[i]) == token_ids(backend(batch[i]))
    with pytest.raises(SampleError, match="empty"):
        backend(np.zeros(0, np.float32))


def test_failing_bucket_is_split_and_only_the_culprit_fails(tiny_experiment, clips, monkeypatch):
    from espnet_serve.backends import speech2text

    backend = build(tiny_experiment, max_bucket_size=8, **BEAM)
    culprit_frames = extract_features(backend.asr_model, torch.from_numpy(clips[2])).size(0)
    real_encode = speech2text.encode_padded_layers

    def encode_failing_on_culprit(model, feats):
        if any(f.size(0) == culprit_frames for f in feats):
            raise RuntimeError("boom")
        return real_encode(model, feats)

    monkeypatch.setattr(speech2text, "encode_padded_layers", encode_failing_on_culprit)
    out = backend(clips[:4])
    assert isinstance(out[2], SampleError) and out[2].reason == "decoding failed"
    assert isinstance(out[2].__cause__, RuntimeError)
    assert all(isinstance(out[i], list) and out[i] for i in (0, 1, 3))


def test_refuses_unsupported_options(tiny_experiment, tmp_path):
    with pytest.raises(NotImplementedError, match="n-gram"):
        build(tiny_experiment, ngram_file="lm.arpa")
    lm = write_random_lm_experiment(tmp_path / "lm", lm_conf=LANGUAGE_MODELS["transformer"][1])
    with pytest.raises(NotImplementedError, match="greedy_ctc ignores the language model"):
        build(
            tiny_experiment,
            decoding="greedy_ctc",
            lm_train_config=lm.lm_train_config,
            lm_file=lm.lm_file,
        )
    with pytest.raises(NotImplementedError, match="TransformerLM and SequentialRNNLM"):
        check_lm_supported(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="CUDA"):
        build(tiny_experiment, dtype="float16", device="cpu")
    with pytest.raises(ValueError, match="decoding"):
        build(tiny_experiment, decoding="sampling")


# ------------------------------------------------------------------ InferenceSession


@pytest.fixture(scope="module")
def batched_bundle(tmp_path_factory, tiny_experiment, user_code_dir) -> Path:
    return write_bundle(
        tmp_path_factory.mktemp("batched_bundle") / "bundle",
        asr_train_config=tiny_experiment.asr_train_config,
        asr_model_file=tiny_experiment.asr_model_file,
        decoding={**BEAM, "device": "auto", "max_bucket_size": 32},
        backend="espnet_serve.backends.BatchedSpeech2Text",
        output_fn="src.output.output_fn",
        user_code_dir=user_code_dir,
    )


def test_session_batches_in_one_backend_call(batched_bundle, clips):
    session = InferenceSession.from_pretrained(
        str(batched_bundle), trust_user_code=True, prefer_model_batch=True
    )
    assert isinstance(session.model, BatchedSpeech2Text)
    batch = clips[:9]
    with mock.patch.object(
        BatchedSpeech2Text, "__call__", autospec=True, side_effect=BatchedSpeech2Text.__call__
    ) as spy:
        out = session.forward_batch(batch, indices=[f"utt{i}" for i in range(9)])
    assert spy.call_count == 1
    assert len(spy.call_args.kwargs["speech"]) == 9
    expected = [session.model(clip)[0][0] for clip in batch]
    assert [o["uttid"] for o in out] == [f"utt{i}" for i in range(9)]
    assert [o["text"] for o in out] == expected
    assert all(o["made_by"] == "bundled-user-code" for o in out)


def test_session_output_fn_sees_only_decoded_samples(batched_bundle, clips):
    session = InferenceSession.from_pretrained(
        str(batched_bundle), trust_user_code=True, prefer_model_batch=True
    )
    samples = [clips[0], np.zeros(0, np.float32), clips[1]]
    out = session.forward_batch(samples, indices=["a", "b", "c"], return_exceptions=True)
    assert isinstance(out[1], SampleError) and out[1].reason == "empty"
    assert [out[0]["uttid"], out[2]["uttid"]] == ["a", "c"]
    assert out[2]["text"] == session.model(clips[1])[0][0]
    assert out[0]["made_by"] == out[2]["made_by"] == "bundled-user-code"


def test_session_from_config_passes_sample_errors_through(tiny_experiment, clips):
    config = {
        "model": {
            "_target_": "espnet_serve.backends.BatchedSpeech2Text",
            "asr_train_config": str(tiny_experiment.asr_train_config),
            "asr_model_file": str(tiny_experiment.asr_model_file),
            **BEAM,
        }
    }
    session = InferenceSession.from_config(config, prefer_model_batch=True)
    samples = [clips[0], np.zeros(0, np.float32), clips[1]]
    out = session.forward_batch(samples, return_exceptions=True)
    assert isinstance(out[1], SampleError) and out[1].index == 1
    assert token_ids(out[0]) == token_ids(session.model(clips[0]))
    assert token_ids(out[2]) == token_ids(session.model(clips[1]))
    with pytest.raises(SampleError, match="empty"):
        session.forward_batch(samples)


def test_a_batched_only_option_in_an_espnet2_config_is_for_the_batched_backend_alone(
    tiny_experiment, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    import logging

    from espnet2.bin.asr_inference import Speech2Text
    from omegaconf import OmegaConf

    from espnet_serve.bundle.config import build_batched_if_exact

    config = OmegaConf.create(
        {
            "model": {
                "_target_": "espnet2.bin.asr_inference.Speech2Text",
                "asr_train_config": str(tiny_experiment.asr_train_config),
                "asr_model_file": str(tiny_experiment.asr_model_file),
                "beam_size": 1,
                "ctc_weight": 1.0,
                "decoding": "greedy_ctc",
            }
        }
    )
    batched, is_batched = build_batched_if_exact(config, {}, batched=True)
    assert is_batched and isinstance(batched, BatchedSpeech2Text) and batched.greedy
    # `bentoml build`, run in-process by an earlier test module, disables existing loggers.
    monkeypatch.setattr(logging.getLogger("espnet_serve.bundle.config"), "disabled", False)
    with caplog.at_level(logging.WARNING, logger="espnet_serve.bundle.config"):
        plain, is_batched = build_batched_if_exact(config, {}, batched=False)
    assert not is_batched and type(plain) is Speech2Text
    assert "takes no decoding: greedy_ctc" in caplog.text
