"""Long recordings without a server: segmentation, word timing, subtitles, the CLI.

The recording is synthetic with exact truth (``digits_recipe.longfile``): digit
strings in held-out voices, separated by pauses, with each word's start and end.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from digits_recipe.longscore import score

from espnet_serve import InferenceSession
from espnet_serve.assets import DEFAULT_MODEL_ARCHIVE, load_heldout
from espnet_serve.audio.ingest import AudioInputError, IngestLimits, open_audio_stream
from espnet_serve.audio.segmenter import AudioSegment, SegmentationOptions, segment_stream
from espnet_serve.cli.main import main as cli
from espnet_serve.pipeline import subtitles
from espnet_serve.pipeline.align import group_into_words
from espnet_serve.pipeline.decode import SegmentDecoder
from espnet_serve.pipeline.transcriber import Transcriber
from espnet_serve.pipeline.types import Segment, Transcript, Word
from tests.conftest import LongRecording

SAMPLE_RATE = 16000
# Bounds with room for the model (measured: WER 2.0% on the 10-minute file, bench/longform.py).
MAX_WER = 0.06
MEDIAN_TIME_ERROR_S = 0.2
P95_TIME_ERROR_S = 0.5


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> InferenceSession:
    return InferenceSession.from_pretrained(
        str(DEFAULT_MODEL_ARCHIVE),
        trust_user_code=True,
        batched_backend=True,
        prefer_model_batch=True,
        downloader_kwargs={"cachedir": str(tmp_path_factory.mktemp("cache"))},
    )


@pytest.fixture(scope="module")
def transcript(session: InferenceSession, long_recording: LongRecording) -> Transcript:
    return Transcriber(session).transcribe(long_recording.path, word_timestamps=True)


def segments_of(path, options: SegmentationOptions | None = None):
    with open_audio_stream(path, target_rate=SAMPLE_RATE, limits=IngestLimits()) as audio:
        return list(segment_stream(audio, SAMPLE_RATE, options))


def test_each_digit_string_is_one_segment_timed_by_its_speech(long_recording: LongRecording):
    segments = segments_of(long_recording.path)
    result = score(
        [Segment(id=s.index, start=s.start, end=s.end, text="") for s in segments],
        long_recording.truth,
    )
    assert abs(len(segments) - len(long_recording.truth)) <= 2
    assert result.matched >= 0.95 * len(long_recording.truth)
    for errors in (result.segment_start, result.segment_end):
        assert np.median(errors) <= MEDIAN_TIME_ERROR_S
        assert np.percentile(errors, 95) <= P95_TIME_ERROR_S
    starts = [s.start for s in segments]
    assert starts == sorted(starts)
    assert all(a.end <= b.start for a, b in itertools.pairwise(segments))
    options = SegmentationOptions()
    for segment in segments:
        assert segment.offset == pytest.approx(max(0.0, segment.start - options.pad_before_seconds))
        assert len(segment.samples) / SAMPLE_RATE <= segment.end - segment.offset + 0.05


def test_a_short_clip_is_one_segment_of_the_whole_clip():
    clip = load_heldout(1)[0]
    audio = clip.read_audio(SAMPLE_RATE)
    (segment,) = segments_of(clip.path)
    assert segment.offset == 0.0
    np.testing.assert_array_equal(segment.samples, audio)
    assert 0.0 <= segment.start < segment.end <= len(audio) / SAMPLE_RATE


def test_speech_longer_than_the_cap_is_cut_into_pieces_that_cover_it(
    long_recording: LongRecording,
):
    """With pauses not counted as silence, the cap alone cuts the recording."""
    options = SegmentationOptions(min_silence_seconds=30.0, max_segment_seconds=61.0)
    segments = segments_of(long_recording.path, options)
    assert len(segments) >= 2
    assert all(s.end - s.start <= options.max_segment_seconds + 1e-6 for s in segments)
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))


def speech_blocks(minutes: float) -> Iterator[np.ndarray]:
    """Held-out clips with pauses, block after block, never held all at once."""
    clips = [clip.read_audio(SAMPLE_RATE) for clip in load_heldout(12)]
    pause = np.zeros(SAMPLE_RATE, np.float32)
    produced = 0
    for clip in itertools.cycle(clips):
        if produced >= minutes * 60 * SAMPLE_RATE:
            return
        yield clip
        yield pause
        produced += len(clip) + len(pause)


@pytest.mark.slow
def test_segmentation_memory_follows_the_segment_not_the_recording():
    minutes = 15  # 57.6 MB as float32
    tracemalloc.start()
    try:
        count = sum(1 for _ in segment_stream(speech_blocks(minutes), SAMPLE_RATE))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count > 300
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB while segmenting {minutes} minutes"


@pytest.mark.slow
def test_long_recording_transcript_words_and_times(
    transcript: Transcript, long_recording: LongRecording
):
    result = score(transcript.segments, long_recording.truth)
    assert result.wer <= MAX_WER, result.summary()
    assert transcript.text == " ".join(s.text for s in transcript.segments if s.text)
    assert transcript.duration == pytest.approx(long_recording.truth[-1].end, abs=2.0)
    assert len(result.word_start) >= 0.8 * result.reference_words
    for errors in (result.word_start, result.word_end):
        assert np.median(errors) <= MEDIAN_TIME_ERROR_S, result.summary()
        assert np.percentile(errors, 95) <= P95_TIME_ERROR_S, result.summary()
    for segment in transcript.segments:
        assert [w.word for w in segment.words] == segment.text.split()
        assert all(w.start < w.end for w in segment.words)
        if segment.words:
            assert segment.start - 0.25 <= segment.words[0].start
            assert segment.words[-1].end <= segment.end + 0.1
        assert segment.tokens and segment.avg_logprob <= 0.0
        assert 0.0 <= segment.no_speech_prob <= 1.0
    assert [s.id for s in transcript.segments] == list(range(len(transcript.segments)))


@pytest.mark.slow
def test_subtitles_carry_each_segment(transcript: Transcript):
    texted = [s for s in transcript.segments if s.text]
    srt = subtitles.to_srt(transcript.segments)
    cues = srt.strip().split("\n\n")
    assert len(cues) == len(texted)
    stamp = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"
    for number, (cue, segment) in enumerate(zip(cues, texted, strict=True), start=1):
        index, times, text = cue.split("\n")
        assert int(index) == number and text == segment.text
        start, end = (
            int(h) * 3600 + int(m) * 60 + int(sec) + int(ms) / 1000
            for h, m, sec, ms in re.findall(stamp, times)
        )
        assert start == pytest.approx(segment.start, abs=5e-4)
        assert end == pytest.approx(segment.end, abs=5e-4)
        assert re.fullmatch(f"{stamp} --> {stamp}", times) and "," in times
    vtt = subtitles.to_vtt(transcript.segments)
    assert vtt.startswith("WEBVTT\n\n")
    vtt_cues = vtt.removeprefix("WEBVTT\n\n").strip().split("\n\n")
    assert [cue.split("\n")[1] for cue in vtt_cues] == [s.text for s in texted]
    assert all("." in cue.split("\n")[0] for cue in vtt_cues)


@pytest.mark.parametrize(
    ("tokens", "whole_words"),
    [
        (["t", "w", "o", "<space>", "o", "h"], False),  # characters
        (["\u2581tw", "o", "\u2581oh"], False),  # sentencepiece pieces
        (["two", "oh"], True),  # word tokens
    ],
)
def test_aligned_tokens_are_grouped_into_words(tokens: list[str], whole_words: bool):
    frames = {i: (2 * i, 2 * i + 1) for i, token in enumerate(tokens) if token != "<space>"}
    words = group_into_words(tokens, frames, 0.1, whole_words=whole_words)
    last = 2 * (len(tokens) - 1) + 1
    assert [w.word for w in words] == ["two", "oh"]
    assert words[0].start == 0.0 and words[1].end == pytest.approx(0.1 * last)
    assert all(isinstance(w, Word) and w.start < w.end for w in words)


@pytest.mark.slow
def test_alignment_of_a_held_out_clip_with_its_truth(session: InferenceSession):
    clip = load_heldout(1)[0]
    audio = clip.read_audio(SAMPLE_RATE)
    aligner = Transcriber(session).decoder.aligner
    aligned, empty = aligner.align([audio, audio], [clip.text, ""])
    assert [w.word for w in aligned.words] == clip.text.split()
    times = [t for w in aligned.words for t in (w.start, w.end)]
    assert times == sorted(times) and times[0] >= 0.0 and times[-1] <= len(audio) / SAMPLE_RATE
    assert empty is None or empty.words == ()


@pytest.mark.slow
def test_word_times_reuse_the_decode_pass_encoder_output(session: InferenceSession):
    """One padded encoder pass serves decoding and alignment; the words are the same as from
    a fresh encoding of each clip."""
    clips = [clip.read_audio(SAMPLE_RATE) for clip in load_heldout(3)]
    segments = [AudioSegment.whole(i, audio, SAMPLE_RATE) for i, audio in enumerate(clips)]
    decoder = SegmentDecoder(session, SAMPLE_RATE)
    passes = []
    encoder = session.model.asr_model.encoder
    handle = encoder.register_forward_hook(lambda *_: passes.append(1))
    try:
        decoded = decoder.decode(segments, words=True)
    finally:
        handle.remove()
    assert len(passes) == 1
    fresh = decoder.aligner.align(clips, [segment.text for segment in decoded])
    for segment, alignment in zip(decoded, fresh, strict=True):
        assert segment.words and [w.word for w in segment.words] == segment.text.split()
        assert segment.tokens == alignment.tokens
        for word, again in zip(segment.words, alignment.words, strict=True):
            assert word.word == again.word
            assert (word.start, word.end) == pytest.approx((again.start, again.end), abs=1e-3)


@pytest.mark.slow
def test_refused_audio_is_a_typed_error(session: InferenceSession):
    with pytest.raises(AudioInputError, match="could not decode"):
        Transcriber(session).transcribe(b"not audio at all" * 10)


@pytest.mark.slow
def test_cli_transcribes_a_shipped_clip_to_json_srt_and_vtt(capsys: pytest.CaptureFixture[str]):
    """The console command once as a user runs it (JSON with words); SRT and VTT in-process."""
    clip = load_heldout(1)[0]
    command = [str(Path(sys.executable).with_name("espnet-serve")), "transcribe", str(clip.path)]
    run = subprocess.run(
        [*command, "--format", "json", "--words"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["text"] == clip.text
    assert [w["word"] for w in body["segments"][0]["words"]] == clip.text.split()
    for output_format, first_line in (("srt", "1"), ("vtt", "WEBVTT")):
        assert cli(["transcribe", str(clip.path), "--format", output_format, "--no-progress"]) == 0
        output = capsys.readouterr().out
        assert output.splitlines()[0] == first_line
        assert clip.text in output
