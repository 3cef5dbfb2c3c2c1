"""The embedded default model transcribes held-out clips exactly."""

from __future__ import annotations

import json
from pathlib import Path

import editdistance
import pytest
import soundfile as sf

from espnet_serve import InferenceSession
from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE, HELDOUT_DIR, load_heldout
from espnet_serve.cli import main as cli


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> InferenceSession:
    return InferenceSession.from_pretrained(
        str(DEFAULT_MODEL_ARCHIVE),
        trust_user_code=True,
        downloader_kwargs={"cachedir": str(tmp_path_factory.mktemp("cache"))},
    )


def test_heldout_set_is_packaged() -> None:
    clips = load_heldout()
    assert len(clips) >= 100
    assert len({clip.uttid for clip in clips}) == len(clips)
    info = sf.info(str(clips[0].path))
    assert (info.samplerate, info.channels) == (16000, 1)
    assert (HELDOUT_DIR / "transcripts.tsv").is_file()


def test_load_heldout_limit() -> None:
    clips = load_heldout(3)
    assert [clip.uttid for clip in clips] == [clip.uttid for clip in load_heldout()[:3]]
    audio = clips[0].read_audio(16000)
    assert audio.size == sf.info(str(clips[0].path)).frames
    assert audio.ndim == 1
    assert audio.dtype.name == "float32"


@pytest.mark.slow
def test_heldout_word_error_rate_is_within_the_recipe_limit(session: InferenceSession) -> None:
    """The shipped espeak-ng held-out set at ≤ 1 % WER (the recipe's limit), clip by clip."""
    clips = load_heldout()
    answers = [session(clip.read_audio(16000), idx=clip.uttid) for clip in clips]
    assert [answer["uttid"] for answer in answers] == [clip.uttid for clip in clips]
    errors = sum(
        editdistance.eval(clip.text.split(), answer["text"].split())
        for clip, answer in zip(clips, answers, strict=True)
    )
    assert errors <= 0.01 * sum(len(clip.text.split()) for clip in clips)


@pytest.mark.slow
def test_forward_batch_keeps_order(session: InferenceSession) -> None:
    clips = load_heldout(4)[::-1]
    results = session.forward_batch(
        [clip.read_audio(16000) for clip in clips], indices=[clip.uttid for clip in clips]
    )
    assert results == [session(clip.read_audio(16000), idx=clip.uttid) for clip in clips]
    assert len({result["text"] for result in results}) == len(clips)


@pytest.mark.slow
def test_output_fn_batched_form(session: InferenceSession) -> None:
    nbest_a = [("one two", ["o"], [1], None)]
    nbest_b = [("nine", ["n"], [2], None), ("five", ["f"], [3], None)]
    assert session.output_fn is not None
    assert session.output_fn(data=[{}, {}], model_output=[nbest_a, nbest_b], idx=["a", "b"]) == [
        {"uttid": "a", "text": "one two"},
        {"uttid": "b", "text": "nine"},
    ]
    assert session.output_fn(data={}, model_output=[], idx="c") == {"uttid": "c", "text": ""}


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "mode"), [([], "batched"), (["--reference"], "reference")])
def test_eval_command_json(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    session: InferenceSession,
    flags: list[str],
    mode: str,
) -> None:
    status = cli.main(["eval", "--limit", "5", "--json", "--cachedir", str(tmp_path), *flags])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    clips = load_heldout(5)
    wrong = [
        {"uttid": clip.uttid, "ref": clip.text, "hyp": answer}
        for clip in clips
        if (answer := session(clip.read_audio(16000))["text"]) != clip.text
    ]
    assert report["count"] == 5
    assert [
        {key: error[key] for key in ("uttid", "ref", "hyp")} for error in report["errors"]
    ] == wrong
    assert (report["wer"] > 0) == bool(wrong) and report["wer"] <= 0.1
    assert (report["mode"], report["sample_rate"]) == (mode, 16000)
    assert report["decoding_overrides"] == {}
    assert report["rtf"] > 0
