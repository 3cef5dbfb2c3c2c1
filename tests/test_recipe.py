"""The digits recipe: its engines and augmentation, and a toy-scale run end to end."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from espnet_serve import InferenceSession
from espnet_serve.assets import HELDOUT_DIR, load_heldout
from espnet_serve.bundle.store import load_local_session
from espnet_serve.executors import executor_for

RECIPE_DIR = Path(__file__).absolute().parent.parent / "recipes" / "digits"
sys.path.insert(0, str(RECIPE_DIR))

from digits_recipe.config import SetSpec, load_config  # noqa: E402
from digits_recipe.errors import DEL, INS_EDGE, INS_PAUSE, SUB, alignment_errors  # noqa: E402
from digits_recipe.realdev import read_clip  # noqa: E402
from digits_recipe.realtest import (  # noqa: E402
    CODEC2_RATE,
    RADIO_COUNTS,
    RADIO_DIRECTORY,
    SCID,
    build_radio,
    build_word_pack,
)
from digits_recipe.synth import CHANNELS, WIDEBAND, Utterance, plan_set, render  # noqa: E402

TOOLS = ("espeak-ng", "flite", "festival", "sox")
FESTIVAL_VOICES = Path("/usr/share/festival/voices")
SAMPLE_RATE = 16000
HIGH_BAND_HZ = 3600  # above the telephone band (300-3400 Hz)
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh")

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS)
    or not (FESTIVAL_VOICES / "english" / "ked_diphone").is_dir(),
    reason=f"needs {', '.join(TOOLS)} and the festival voices (make sysdeps)",
)

ESPEAK = Utterance(
    uttid="u",
    text="three one four",
    voice="en-us+m3",
    speed_wpm=150,
    pitch=50,
    speed_perturb=1.0,
    noise="white",
    snr_db=40.0,
    gain_db=0.0,
    pad_before_s=0.1,
    pad_after_s=0.1,
    noise_seed=1,
)
ENGINE_VOICES = {"espeak-ng": "en-us+m3", "flite": "kal16", "festival": "ked_diphone"}


def _high_band_fraction(audio: np.ndarray) -> float:
    """Fraction of the signal's energy above ``HIGH_BAND_HZ``."""
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / SAMPLE_RATE)
    return float(power[freqs > HIGH_BAND_HZ].sum() / power.sum())


@pytest.mark.parametrize("engine", sorted(ENGINE_VOICES))
def test_each_engine_renders_speech(engine: str) -> None:
    utt = dataclasses.replace(ESPEAK, engine=engine, voice=ENGINE_VOICES[engine])
    audio = render(utt, SAMPLE_RATE)
    assert audio.dtype == np.float32
    assert 0.3 * SAMPLE_RATE < audio.size < 5 * SAMPLE_RATE
    assert 0.1 < np.abs(audio).max() <= 1.0


@pytest.mark.parametrize("channel", [c for c in CHANNELS if c != WIDEBAND])
def test_telephone_channels_cut_the_high_band(channel: str) -> None:
    wide = render(ESPEAK, SAMPLE_RATE)
    phone = render(dataclasses.replace(ESPEAK, channel=channel), SAMPLE_RATE)
    assert abs(phone.size - wide.size) < 0.05 * wide.size
    assert _high_band_fraction(wide) > 0.001
    assert _high_band_fraction(phone) < 0.1 * _high_band_fraction(wide)


@pytest.mark.parametrize("channel", [c for c in CHANNELS if c != WIDEBAND])
def test_telephone_channels_render_the_same_every_time(channel: str) -> None:
    utt = dataclasses.replace(ESPEAK, channel=channel)
    np.testing.assert_array_equal(render(utt, SAMPLE_RATE), render(utt, SAMPLE_RATE))


def _longest_zero_run(audio: np.ndarray) -> int:
    """Length of the longest run of exactly-zero samples."""
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[1], audio != 0, [1]]))))
    return int(runs[::2].max()) if runs.size else 0


def test_words_reading_joins_the_words_with_silence() -> None:
    quiet = dataclasses.replace(ESPEAK, noise="none", pad_before_s=0.0, pad_after_s=0.0)
    phrase = render(quiet, SAMPLE_RATE)
    words = render(dataclasses.replace(quiet, reading="words"), SAMPLE_RATE)
    assert _longest_zero_run(phrase) < 0.05 * SAMPLE_RATE
    assert _longest_zero_run(words) >= 0.05 * SAMPLE_RATE


def test_augmentation_changes_the_audio_not_the_plan() -> None:
    config = load_config()
    plain = SetSpec.from_config(config, "heldout")
    augmented = dataclasses.replace(
        plain, tempo=(0.8, 1.2), pitch_cents=(-300, 300), reverb_prob=1.0, reverb=(10, 70)
    )
    base = plan_set(plain, WORDS, (1, 5))[:5]
    other = plan_set(augmented, WORDS, (1, 5))[:5]
    neutral = ("tempo", "pitch_cents", "reverb")
    strip = {name: getattr(ESPEAK, name) for name in neutral}
    assert [dataclasses.replace(u, **strip) for u in other] == base
    assert all(u.reverb > 0 for u in other)
    assert render(other[0], SAMPLE_RATE).size != render(base[0], SAMPLE_RATE).size


def test_onset_cut_draws_leave_the_rest_of_the_plan() -> None:
    config = load_config()
    plain = dataclasses.replace(SetSpec.from_config(config, "train_flite"), onset_cut_prob=0.0)
    cut = dataclasses.replace(plain, onset_cut_prob=0.5, onset_cut=(0.05, 0.3))
    base = plan_set(plain, WORDS, (1, 5))[:200]
    other = plan_set(cut, WORDS, (1, 5))[:200]
    assert [dataclasses.replace(u, onset_cut=0.0) for u in other] == base
    levels = [u.onset_cut for u in other if u.onset_cut]
    assert 60 <= len(levels) <= 140
    assert all(0.05 <= level <= 0.3 for level in levels)


def test_onset_cut_takes_a_weak_first_consonant_off_each_word() -> None:
    quiet = dataclasses.replace(
        ESPEAK, text="four four", noise="none", pad_before_s=0.0, pad_after_s=0.0, reading="words"
    )
    whole = render(quiet, SAMPLE_RATE)
    cut = render(dataclasses.replace(quiet, onset_cut=0.2), SAMPLE_RATE)
    # espeak-ng's "four" opens with ~80 ms of frication well below a fifth of its vowel:
    # both words lose it, and what is left starts loud
    removed = (whole.size - cut.size) / SAMPLE_RATE
    assert 0.08 <= removed <= 0.25
    frame = SAMPLE_RATE // 100
    first, first_whole = (np.sqrt(np.mean(audio[:frame] ** 2)) for audio in (cut, whole))
    assert first >= max(2 * first_whole, 0.2 * np.sqrt(np.mean(whole**2)))


def test_heldout_plan_renders_the_shipped_clips() -> None:
    config = load_config()
    spec = SetSpec.from_config(config, "heldout")
    synthesis = config["synthesis"]
    for utt in plan_set(spec, synthesis["words"], tuple(synthesis["num_words"]))[:3]:
        shipped, rate = sf.read(str(HELDOUT_DIR / f"{utt.uttid}.flac"), dtype="int16")
        rendered = np.round(render(utt, rate).astype(np.float64) * 32767)
        assert rate == int(synthesis["sample_rate"])
        np.testing.assert_allclose(rendered, shipped, atol=1)


@pytest.mark.parametrize(
    ("suffix", "rate", "subtype"), [(".au", 8000, "ULAW"), (".raw", 16000, "PCM_16")]
)
def test_real_dev_reads_headerless_clips(
    tmp_path: Path, suffix: str, rate: int, subtype: str
) -> None:
    # saytime's digits are headerless 8 kHz mu-law .au, pocketsphinx's .raw 16 kHz PCM
    t = np.arange(rate // 2) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    audio = np.concatenate([np.zeros(rate // 10), tone, np.zeros(rate // 10)])
    path = tmp_path / f"clip{suffix}"
    sf.write(str(path), audio, rate, format="RAW", subtype=subtype, endian="LITTLE")
    assert path.read_bytes()[:4] != b".snd"

    clip = read_clip(path)

    # resampled to 16 kHz, the leading and trailing silence trimmed: the tone is left
    assert abs(len(clip) - SAMPLE_RATE // 2) < SAMPLE_RATE // 100
    assert np.abs(clip).max() == pytest.approx(0.5, abs=0.03)


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    """A half-scale sine with 0.1 s of silence before and after."""
    t = np.arange(round(rate * seconds)) / rate
    silence = np.zeros(rate // 10)
    return np.concatenate([silence, 0.5 * np.sin(2 * np.pi * hz * t), silence])


def test_real_test_set_joins_only_the_words_a_speaker_recorded(tmp_path: Path) -> None:
    # scid's announcer says 1-8 only: its strings hold no zero, nine or oh
    package = tmp_path / "package"
    (package / SCID.directory).mkdir(parents=True)
    for n, name in enumerate(SCID.files.values()):
        sf.write(str(package / SCID.directory / name), _tone(11025, 0.3, 300 + 50 * n), 11025)

    out = build_word_pack(tmp_path / "set", SCID, package)

    rows = [line.split("\t") for line in (out / "transcripts.tsv").read_text().splitlines()]
    said = [text.split() for _, text in rows]
    assert [words for words in said if len(words) == 1] == [[w] for w in SCID.files]
    assert {w for words in said for w in words} == set(SCID.files)
    assert len(list(out.glob("*.flac"))) == len(rows) > len(SCID.files)
    sources = (out / "SOURCES.txt").read_text()
    assert SCID.source.package in sources and SCID.source.licence in sources


def test_real_test_radio_counts_are_cut_from_their_recordings(tmp_path: Path) -> None:
    # the counts are stretches of longer 8 kHz recordings (call sign first, "testing" after)
    package = tmp_path / "package"
    (package / RADIO_DIRECTORY).mkdir(parents=True)
    lengths = {}
    for count in RADIO_COUNTS:
        seconds = (count.end_s or count.start_s + 5.0) + 2.0
        audio = 0.3 * np.sin(np.arange(round(seconds * CODEC2_RATE)) * 0.3)
        (package / RADIO_DIRECTORY / count.path).write_bytes(
            np.round(audio * 32767).astype("<i2").tobytes()
        )
        end = seconds if count.end_s is None else count.end_s
        lengths[count.uttid] = end - count.start_s

    out = build_radio(tmp_path / "set", package)

    for count in RADIO_COUNTS:
        clip, rate = sf.read(str(out / f"{count.uttid}.flac"))
        assert rate == SAMPLE_RATE
        assert len(clip) / rate == pytest.approx(lengths[count.uttid], abs=0.01)
    assert (out / "transcripts.tsv").read_text().count("one two three four five") == 2


@pytest.mark.slow
def test_toy_recipe_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {
        **os.environ,
        "PYTHONPATH": str(RECIPE_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    run = subprocess.run(
        [
            *(sys.executable, "-m", "digits_recipe.run"),
            *("--config", str(RECIPE_DIR / "conf" / "toy.yaml"), "--work-dir", str(work)),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "nltk_data" not in run.stdout + run.stderr  # no download tried (espnet2's g2p_en)
    archive = work / "digits_asr.tar.gz"
    assert archive.is_file()
    assert (work / "bundle" / "src" / "output.py").is_file()
    trained = yaml.safe_load((work / "bundle" / "exp" / "asr" / "config.yaml").read_text())
    assert trained["token_type"] == "word"
    assert trained["token_list"] == ["<blank>", "<unk>", *sorted(WORDS), "<sos/eos>"]

    session = InferenceSession.from_pretrained(
        str(archive), trust_user_code=True, downloader_kwargs={"cachedir": str(tmp_path / "cache")}
    )
    clip = load_heldout(1, directory=work / "data" / "heldout")[0]
    assert sf.info(str(clip.path)).samplerate == 16000
    result = session(clip.read_audio(16000), idx=clip.uttid)
    assert result["uttid"] == clip.uttid
    assert isinstance(result["text"], str)

    # The streaming model: Speech2TextStreaming with the training set's feature statistics,
    # which the bundle ships; it decodes a stream block by block.
    streaming_session, streaming = load_local_session(
        str(work / "digits_asr_streaming.tar.gz"),
        Path(tempfile.mkdtemp(dir=tmp_path)),
        trust_user_code=True,  # the recipe's own output_fn
    )
    assert streaming.family == "asr_streaming"
    stats = np.load(work / "exp" / "asr_streaming_stats" / "train" / "feats_stats.npz")
    normalize = streaming_session.model.asr_model.normalize
    assert np.allclose(normalize.mean.numpy(), stats["sum"] / stats["count"], atol=1e-5)
    audio = clip.read_audio(16000)
    stream = executor_for(streaming_session, streaming.family).open_stream()
    pieces = np.array_split(audio, 4)
    final = [stream.push(piece, final=i == len(pieces) - 1) for i, piece in enumerate(pieces)][-1]
    assert all(word in WORDS for word in final.text.split())

    # The default voice: a Text2Speech bundle (FastSpeech, Griffin-Lim) that speaks the words.
    voice_session, spec = load_local_session(
        str(work / "digits_voice.tar.gz"), Path(tempfile.mkdtemp(dir=tmp_path))
    )
    assert (spec.family, spec.sample_rate) == ("tts", 16000)
    voice = executor_for(voice_session, spec.family)
    assert voice.synthesize("one two three").size > 0
    durations = (work / "voice" / "dump" / "train" / "durations").read_text().splitlines()
    shapes = (work / "voice" / "dump" / "train" / "speech_shape").read_text().splitlines()
    for line, shape in zip(durations, shapes, strict=True):
        frames = [int(d) for d in line.split()[1:]]
        assert sum(frames) == int(shape.split()[1]) // 256 + 1  # every frame has its token


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        ("one two three", "oh one two six three", [(INS_EDGE, "oh"), (INS_PAUSE, "six")]),
        ("one two three", "one eight three six", [(SUB, "eight"), (INS_EDGE, "six")]),
        ("one two three", "one three", [(DEL, "two")]),
        ("one two", "one two", []),
    ],
)
def test_errors_are_told_apart_and_insertions_placed(ref: str, hyp: str, expected: list) -> None:
    assert alignment_errors(ref.split(), hyp.split()) == expected
