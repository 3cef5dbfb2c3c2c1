"""Long recordings through a real ``bentoml serve`` and the unchanged openai SDK.

What only the real model and server show: verbose_json's segment and word times against
the truth (the model service's alignment), short requests answered while a long one
decodes (batching), the README's examples, and memory within the README's bound under
concurrent 10-minute uploads (``bench/long_uploads.py`` measures 32). The formats,
``stream=True`` and its errors, and refused option combinations are HTTP behaviour:
``test_http_formats.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import openai
import pytest
from digits_recipe.longscore import score

from bench.long_uploads import long_wav, measure, upload_bytes_held
from espnet_serve.assets import load_heldout
from espnet_serve.audio.segmenter import SegmentationOptions
from espnet_serve.serving.settings import ServeSettings
from tests.conftest import LongRecording
from tests.server import REPO_ROOT, BentoServer

pytestmark = pytest.mark.slow

MODEL = "espnet-digits-asr"
MAX_WER = 0.06


@pytest.fixture(scope="module")
def server(default_server: BentoServer) -> BentoServer:
    return default_server


@pytest.fixture(scope="module")
def sdk(server: BentoServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def verbose(sdk: openai.OpenAI, long_recording: LongRecording):
    with long_recording.path.open("rb") as audio:
        return sdk.audio.transcriptions.create(
            model=MODEL,
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )


def test_verbose_json_has_timed_segments_and_words(verbose, long_recording: LongRecording):
    segments = [
        SimpleNamespace(
            start=s.start,
            end=s.end,
            text=s.text,
            words=[w for w in verbose.words if s.start - 0.25 <= w.start < s.end + 0.1],
        )
        for s in verbose.segments
    ]
    result = score(segments, long_recording.truth)
    assert result.wer <= MAX_WER, result.summary()
    assert verbose.text == " ".join(s.text for s in verbose.segments if s.text)
    assert [w.word for w in verbose.words] == verbose.text.split()
    assert verbose.duration == pytest.approx(long_recording.truth[-1].end, abs=2.0)
    assert verbose.usage.type == "duration" and verbose.usage.seconds == verbose.duration
    for errors in (result.segment_start, result.word_start, result.word_end):
        assert np.median(errors) <= 0.2 and np.percentile(errors, 95) <= 0.5, result.summary()
    assert [s.id for s in verbose.segments] == list(range(len(verbose.segments)))
    assert all(s.seek == round(s.start * 100) for s in verbose.segments)  # 10 ms frames
    first = verbose.segments[0]
    assert first.temperature == 0.0
    assert first.tokens and first.avg_logprob <= 0.0 and 0.0 <= first.no_speech_prob <= 1.0
    assert first.compression_ratio > 0.0


def test_short_requests_are_answered_while_a_long_one_decodes(
    sdk, server: BentoServer, long_recording: LongRecording
):
    clips = load_heldout(8)

    def long_one() -> str:
        with long_recording.path.open("rb") as audio:
            return sdk.audio.transcriptions.create(model=MODEL, file=audio).text

    def short_one(index: int) -> str:
        with clips[index % len(clips)].path.open("rb") as audio:
            return sdk.audio.transcriptions.create(model=MODEL, file=audio).text

    alone = [short_one(index) for index in range(len(clips))]  # each clip's answer alone
    with ThreadPoolExecutor(5) as pool:
        long_text = pool.submit(long_one)
        shorts = list(pool.map(short_one, range(16)))
    assert long_text.result()
    assert shorts == [alone[index % len(clips)] for index in range(16)]
    assert sum(got == clip.text for got, clip in zip(alone, clips, strict=True)) >= 6


def readme_long_recording_examples() -> list[tuple[str, str]]:
    """The (language, code) blocks of the README's long-recordings section."""
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("### Long recordings, timestamps, subtitles, streaming")
    section = readme[start : readme.index("\n### ", start + 1)]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


def test_readme_long_recording_examples_work_as_written(server: BentoServer, tmp_path):
    (clip,) = [clip for clip in load_heldout(limit=2) if clip.uttid == "heldout_00001"]
    examples = readme_long_recording_examples()
    assert [language for language, _ in examples] == ["python", "bash"]
    outputs = {}
    for language, code in examples:
        code = code.replace("http://127.0.0.1:3000", server.url)
        code = code.replace("/tmp/long.flac", str(tmp_path / "long.flac"))
        command = ["bash", "-ec", code] if language == "bash" else [sys.executable, "-c", code]
        run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        assert clip.text in run.stdout, (code, run.stdout)
        outputs[language] = run.stdout
    assert "transcript.text.done" in outputs["python"]
    assert "WEBVTT" in outputs["bash"] and " --> " in outputs["bash"]


CONCURRENT_LONG_UPLOADS = 8
LONG_UPLOAD_MINUTES = 10.0
MIB = 1024 * 1024
# The README's bound. API worker: per admitted request, its reading buffers (an ingest block,
# the resampler's output, the segmenter's buffer and the multipart spool: 1 MiB each at most)
# besides its segments in flight, and once, the threads' allocator arenas (measured: 90-150 MiB
# more at 8 concurrent uploads than at one).
READING_BUFFERS_MIB = 4
API_FIXED_MIB = 160
# Model worker: one full batch's working memory (32 segments of 10 s), model-dependent;
# measured 78-105 MiB for the embedded model with the model service's allocator setting
# (serving/allocator.py; 230-714 MiB without it).
BATCH_WORKING_MIB = 200


def segments_in_flight_mib(settings: ServeSettings) -> float:
    """The float32 samples of one request's segments in flight (the most the API sends)."""
    options = SegmentationOptions()
    seconds = options.max_segment_seconds + options.pad_before_seconds + options.pad_after_seconds
    return settings.max_segments_in_flight * seconds * 16000 * 4 / MIB


def test_memory_under_concurrent_10_minute_uploads_stays_within_the_bound(
    server: BentoServer, tmp_path
):
    # The README's bound: per admitted request, its segments in flight plus reading buffers
    # in the API worker, and its segments queued in the model worker plus one batch's work.
    path = long_wav(tmp_path, LONG_UPLOAD_MINUTES)
    warm = measure(server, path, 1)  # first long upload: lazy imports and buffers
    loaded = measure(server, path, CONCURRENT_LONG_UPLOADS)
    assert warm["statuses"] == {"200": 1} and loaded["statuses"] == {"200": CONCURRENT_LONG_UPLOADS}
    assert loaded["same_transcript"]
    per_request = segments_in_flight_mib(ServeSettings())
    api_bound = API_FIXED_MIB + CONCURRENT_LONG_UPLOADS * (per_request + READING_BUFFERS_MIB)
    model_bound = CONCURRENT_LONG_UPLOADS * per_request + BATCH_WORKING_MIB
    assert loaded["growth_mib"]["ApiService"] <= api_bound, loaded
    assert loaded["growth_mib"]["ModelService"] <= model_bound, loaded
    # Every upload's bytes were counted while held, and given back.
    assert loaded["peak_upload_bytes_held_mib"] >= loaded["upload_mib"]
    assert upload_bytes_held(server.url) == 0
