"""Audio ingest: good files of any rate and layout decode right; crafted files fail fast and typed.

Everything here encodes real files (soundfile) or crafts their headers by hand
(``struct``); nothing is mocked. The property tests run a fixed number of
Hypothesis examples (profile ``ingest``: ``INGEST_EXAMPLES`` per test) and
check that only ``AudioInputError`` subclasses escape, within a memory and
CPU bound that a header-driven allocation would break.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from espnet_serve.audio.ingest import (
    AudioInputError,
    AudioTooLargeError,
    AudioTooShortError,
    DecodedAudio,
    EmptyAudioError,
    IngestLimits,
    TooManyChannelsError,
    TruncatedAudioError,
    UndecodableAudioError,
    UnsupportedMediaTypeError,
    UnsupportedSampleRateError,
    check_content_type,
    decode_audio,
    read_audio_file,
)
from tests.crafted import TARGET, wav_bytes

LIMITS = IngestLimits(max_seconds=60.0)
# Lenient on duration, so that only the real audio, not the limit, bounds a header's claims.
LENIENT = IngestLimits(max_seconds=1e7)
INGEST_EXAMPLES = 400
# tracemalloc peak allowed for one decode: a constant (one 1 MiB read block, its
# mix-down, resampler buffers) plus a generous multiple of the input size
# (8 kHz 8-bit or GSM input upsampled to 16 kHz float32 is at most ~40 bytes per byte).
PEAK_CONSTANT = 6 << 20
PEAK_PER_INPUT_BYTE = 96
# CPU seconds allowed for one decode of a small input.
CPU_SECONDS = 2.0

settings.register_profile(
    "ingest",
    max_examples=INGEST_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
INGEST = settings.get_profile("ingest")


# ------------------------------------------------------------------- helpers


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def tones(seconds: float, rate: int, freqs: tuple[float, ...] = (440.0,)) -> np.ndarray:
    """One column per frequency, amplitude 0.3."""
    t = np.arange(round(seconds * rate)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def patch_streaminfo(flac: bytes, *, rate: int | None = None, total: int | None = None) -> bytes:
    """Rewrite the sample rate (20 bits) or total samples (36 bits) of a FLAC STREAMINFO."""
    data = bytearray(flac)
    offset = 4 + 4 + 10  # "fLaC", block header, block sizes and frame sizes
    packed = int.from_bytes(data[offset : offset + 8], "big")
    if rate is not None:
        packed = (packed & ~(((1 << 20) - 1) << 44)) | (rate << 44)
    if total is not None:
        packed = (packed & ~((1 << 36) - 1)) | total
    data[offset : offset + 8] = packed.to_bytes(8, "big")
    return bytes(data)


def decode(data: bytes | Path, limits: IngestLimits = LIMITS) -> DecodedAudio:
    return decode_audio(data, target_rate=TARGET, limits=limits)


def fails_fast(data: bytes, error: type[AudioInputError], limits: IngestLimits = LIMITS) -> str:
    """Decode, expecting ``error`` within a small CPU budget; return its message."""
    start = time.process_time()
    with pytest.raises(error) as caught:
        decode(data, limits)
    assert time.process_time() - start < 0.5
    message = str(caught.value)
    assert message and "Traceback" not in message and "libsndfile" not in message.lower()
    assert "<_io." not in message and "psf_" not in message
    return message


# ------------------------------------------------------------------ good files


def test_ingest_imports_only_numpy_soundfile_soxr():
    """The module stays cheap to import: no torch, espnet, bentoml, scipy or pydantic."""
    import ast

    import espnet_serve.audio.ingest as ingest

    tree = ast.parse(Path(ingest.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0] if isinstance(node, ast.Import) else node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    stdlib = {name for name in imported if name.split(".")[0] in sys.stdlib_module_names}
    third_party = imported - stdlib - {"__future__"}
    assert third_party == {"numpy", "soundfile", "soxr", "espnet_serve.audio.riff"}


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [
        ("WAV", "PCM_16", 16000, 1),
        ("WAV", "FLOAT", 44100, 2),
        ("WAV", "PCM_U8", 11025, 1),
        ("WAV", "PCM_24", 96000, 3),
        ("FLAC", None, 22050, 1),
        ("FLAC", None, 48000, 6),
        ("FLAC", None, 8000, 2),
    ],
)
def test_lossless_files_decode_to_the_target_rate(
    fmt: str, subtype: str | None, rate: int, channels: int
):
    seconds = 2.5  # several read blocks at the higher rates
    source = tones(seconds, rate, (300.0, 500.0, 700.0, 900.0, 1100.0, 1300.0)[:channels])
    decoded = decode(encode(source, rate, fmt, subtype))
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert decoded.samples.flags.c_contiguous
    assert (decoded.sample_rate, decoded.source_sample_rate) == (TARGET, rate)
    assert (decoded.source_channels, decoded.source_format) == (channels, fmt)
    assert len(decoded.samples) == round(len(source) * TARGET / rate)
    assert decoded.duration_seconds == pytest.approx(seconds, abs=1e-3)
    # The analytic mix-down at the target rate, edges aside (8-bit PCM: coarse).
    expected = tones(seconds, TARGET, (300.0, 500.0, 700.0, 900.0, 1100.0, 1300.0)[:channels])
    expected = expected[: len(decoded.samples)]
    edge = TARGET // 20
    atol = 0.01 if subtype == "PCM_U8" else 1e-3
    np.testing.assert_allclose(
        decoded.samples[edge:-edge], expected.mean(axis=1)[edge:-edge], atol=atol
    )


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (32000, 2), (44100, 1)])
def test_ogg_vorbis_decodes_close_to_the_source(rate: int, channels: int):
    source = tones(2.0, rate, (400.0, 600.0)[:channels])
    decoded = decode(encode(source, rate, "OGG"))
    assert decoded.source_format == "OGG" and decoded.source_channels == channels
    assert abs(len(decoded.samples) - 2 * TARGET) <= TARGET // 100
    expected = tones(2.0, TARGET, (400.0, 600.0)[:channels]).mean(axis=1)
    n = min(len(expected), len(decoded.samples))
    correlation = np.corrcoef(decoded.samples[:n], expected[:n])[0, 1]
    assert correlation > 0.99


def test_mix_down_is_the_channel_mean_at_the_same_rate():
    source = np.random.default_rng(0).uniform(-0.5, 0.5, (5000, 4)).astype(np.float32)
    decoded = decode(encode(source, TARGET, "WAV", "FLOAT"))
    np.testing.assert_array_equal(decoded.samples, source.mean(axis=1, dtype=np.float32))


def test_streamed_resampling_equals_one_shot_soxr():
    source = np.random.default_rng(1).uniform(-0.5, 0.5, 3 * 44100 + 123).astype(np.float32)
    decoded = decode(encode(source, 44100, "WAV", "FLOAT"))
    np.testing.assert_allclose(
        decoded.samples, soxr.resample(source, 44100, TARGET, quality="HQ"), atol=1e-6
    )


def test_paths_and_bytes_decode_alike(tmp_path: Path):
    path = tmp_path / "clip.flac"
    sf.write(path, tones(1.0, 22050), 22050)
    from_bytes = decode(path.read_bytes()).samples
    np.testing.assert_array_equal(decode(path).samples, from_bytes)
    np.testing.assert_array_equal(read_audio_file(str(path), target_rate=TARGET), from_bytes)
    with pytest.raises(FileNotFoundError):
        read_audio_file(tmp_path / "missing.flac", target_rate=TARGET)


def test_upsampling_keeps_the_tone():
    decoded = decode(encode(tones(1.0, 8000, (1000.0,)), 8000, "WAV", "PCM_16"))
    assert len(decoded.samples) == TARGET
    expected = tones(1.0, TARGET, (1000.0,))[:, 0]
    np.testing.assert_allclose(decoded.samples[800:-800], expected[800:-800], atol=1e-3)


def test_streamed_wav_of_unknown_length_is_read_to_its_end():
    body = (np.full(TARGET, 1000, np.int16)).tobytes()
    decoded = decode(wav_bytes(body=body, data_size=0xFFFFFFFF))
    assert len(decoded.samples) == TARGET


def test_min_samples_is_counted_at_the_target_rate():
    limits = IngestLimits(min_samples=1040)
    clip = tones(0.065, 8000)  # 520 source samples, 1040 after resampling
    assert len(decode(encode(clip, 8000, "WAV", "FLOAT"), limits).samples) == 1040
    with pytest.raises(AudioTooShortError, match=r"the model needs at least 65 ms"):
        decode(encode(tones(0.06, 8000), 8000, "WAV", "FLOAT"), limits)


# ----------------------------------------------------------- typed errors


AUDIO_ERROR_CODES = {
    UndecodableAudioError: "invalid_audio",
    EmptyAudioError: "empty_audio",
    AudioTooShortError: "audio_too_short",
    UnsupportedSampleRateError: "unsupported_sample_rate",
    TooManyChannelsError: "too_many_channels",
    TruncatedAudioError: "truncated_audio",
    AudioTooLargeError: "audio_too_large",
    UnsupportedMediaTypeError: "unsupported_media_type",
}


def test_error_classes_carry_their_code():
    for error, code in AUDIO_ERROR_CODES.items():
        assert issubclass(error, AudioInputError) and issubclass(error, ValueError)
        assert error.code == code


@pytest.mark.parametrize(
    "content_type", ["audio/wav", "Audio/FLAC; rate=16000", "application/octet-stream", None, ""]
)
def test_audio_content_types_pass(content_type: str | None):
    check_content_type(content_type)


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "application/json"])
def test_other_content_types_are_refused(content_type: str):
    with pytest.raises(UnsupportedMediaTypeError, match="is not audio"):
        check_content_type(content_type)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_sample_rate": 0},
        {"min_sample_rate": 48000, "max_sample_rate": 16000},
        {"max_channels": 0},
        {"max_seconds": 0},
        {"min_samples": -1},
    ],
)
def test_invalid_limits_are_refused(kwargs: dict):
    with pytest.raises(ValueError):
        IngestLimits(**kwargs)


def test_header_claiming_2_31_hz():
    message = fails_fast(wav_bytes(rate=2**31 - 1, frames=16000), UnsupportedSampleRateError)
    assert message == "sample rate 2147483647 Hz is outside 8000\u2013384000 Hz"


def test_header_claiming_1_000_003_hz():
    fails_fast(wav_bytes(rate=1_000_003, frames=16000), UnsupportedSampleRateError, LENIENT)
    flac = encode(tones(1.0, TARGET), TARGET, "FLAC")
    fails_fast(patch_streaminfo(flac, rate=1_000_003), UnsupportedSampleRateError, LENIENT)


def test_one_sample_clip():
    limits = IngestLimits(min_samples=1040)
    message = fails_fast(wav_bytes(frames=1), AudioTooShortError, limits)
    assert message == "audio too short: 1 sample (0.06 ms); the model needs at least 65 ms"
    # Without a model minimum one sample is enough; none is not.
    assert len(decode(wav_bytes(frames=1)).samples) == 1


def test_1024_channels_of_160_frames():
    message = fails_fast(wav_bytes(channels=1024, frames=160), TooManyChannelsError)
    assert message == "the audio has 1024 channels; at most 32 are accepted"


def test_wav_declaring_more_data_than_the_body_holds():
    data = wav_bytes(frames=16000, data_size=10**9)
    message = fails_fast(data, TruncatedAudioError, LENIENT)
    assert "declares 1000000000 bytes" in message and "holds 32000" in message


def test_flac_declaring_far_more_frames_than_the_body_holds():
    flac = patch_streaminfo(encode(tones(3.0, TARGET), TARGET, "FLAC"), total=2**36 - 1)
    assert "limit is 60 s" in fails_fast(flac, AudioTooLargeError)
    assert "ends early" in fails_fast(flac, TruncatedAudioError, LENIENT)


def test_cut_off_flac():
    flac = encode(tones(3.0, TARGET), TARGET, "FLAC")
    fails_fast(flac[: len(flac) // 2], TruncatedAudioError)


def test_audio_over_the_duration_limit():
    data = encode(np.zeros(5 * TARGET, np.float32), TARGET, "WAV", "PCM_16")
    message = fails_fast(data, AudioTooLargeError, IngestLimits(max_seconds=4))
    assert message == "audio is 5.0 s long; the limit is 4 s"


@pytest.mark.parametrize(
    "data",
    [
        b"\x00garbage" * 100,
        b"RIFF\x00\x00garbage",
        b"\x89PNG\r\n\x1a\n" + bytes(200),
        json.dumps({"not": "audio"}).encode(),
        b"PK\x03\x04" + bytes(100),
    ],
    ids=["garbage", "riff-garbage", "png", "json", "zip"],
)
def test_non_audio_bytes(data: bytes):
    assert fails_fast(data, UndecodableAudioError).startswith("could not decode the audio file: ")


def test_unrecognised_format_message_is_plain():
    message = fails_fast(b"\x00garbage" * 100, UndecodableAudioError)
    assert message == (
        "could not decode the audio file: format not recognised (send WAV, FLAC, OGG or MP3)"
    )


def test_empty_bytes_and_empty_data_chunk():
    assert fails_fast(b"", EmptyAudioError) == "the audio file is empty (0 bytes)"
    fails_fast(wav_bytes(frames=0), EmptyAudioError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_samples(bad: float):
    samples = np.full((100, 2), 0.1, np.float32)
    samples[50, 1] = bad
    data = encode(samples, TARGET, "WAV", "FLOAT")
    assert "NaN or infinite" in fails_fast(data, UndecodableAudioError)


def test_crafted_headers_do_not_drive_native_memory(tmp_path: Path):
    """Peak RSS (native allocations included) of decoding every crafted file, in a fresh process."""
    flac = encode(tones(3.0, TARGET), TARGET, "FLAC")
    crafted = {
        "rate_2_31": wav_bytes(rate=2**31 - 1, frames=16000),
        "rate_1000003": wav_bytes(rate=1_000_003, frames=16000),
        "one_sample": wav_bytes(frames=1),
        "channels_1024": wav_bytes(channels=1024, frames=160),
        "wav_claims_1e9_bytes": wav_bytes(frames=16000, data_size=10**9),
        "flac_claims_2_36_frames": patch_streaminfo(flac, total=2**36 - 1),
        "flac_rate_1000003": patch_streaminfo(flac, rate=1_000_003),
        "ima_adpcm_1024_channels": wav_bytes(
            format_tag=0x11, channels=1024, bits=4, block_align=65535, fmt_extra=b"\x02\x00\xff\xff"
        ),
    }
    for name, data in crafted.items():
        (tmp_path / f"{name}.bin").write_bytes(data)
    script = textwrap.dedent(
        """
        import json, resource, sys
        from pathlib import Path
        import numpy as np, soundfile as sf, io
        from espnet_serve.audio.ingest import AudioInputError, IngestLimits, decode_audio
        limits = IngestLimits(max_seconds=1e7, min_samples=1040)
        warm = io.BytesIO(); sf.write(warm, np.zeros(22050, np.float32), 22050, format="FLAC")
        decode_audio(warm.getvalue(), target_rate=16000, limits=limits)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kinds = {}
        for path in sorted(Path(sys.argv[1]).glob("*.bin")):
            try:
                decode_audio(path.read_bytes(), target_rate=16000, limits=limits)
                kinds[path.stem] = "decoded"
            except AudioInputError as exc:
                kinds[path.stem] = exc.code
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"growth_kib": after - before, "kinds": kinds}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["growth_kib"] < 32 * 1024, report
    assert report["kinds"] == {
        "channels_1024": "too_many_channels",
        "flac_claims_2_36_frames": "truncated_audio",
        "flac_rate_1000003": "unsupported_sample_rate",
        "ima_adpcm_1024_channels": "invalid_audio",
        "one_sample": "audio_too_short",
        "rate_1000003": "unsupported_sample_rate",
        "rate_2_31": "unsupported_sample_rate",
        "wav_claims_1e9_bytes": "truncated_audio",
    }


# --------------------------------------------------------------- properties


def decode_within_bounds(data: bytes, limits: IngestLimits = LENIENT) -> None:
    """Decode under tracemalloc: only typed errors escape; memory and CPU stay bounded."""
    tracemalloc.start()
    start = time.process_time()
    try:
        decoded = decode_audio(data, target_rate=TARGET, limits=limits)
    except AudioInputError as exc:
        assert str(exc)
        event(exc.code)
        decoded = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= PEAK_CONSTANT + PEAK_PER_INPUT_BYTE * len(data), (peak, len(data))
    assert time.process_time() - start < CPU_SECONDS
    if decoded is not None:
        event(f"decoded {decoded.source_format}")
        assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
        assert len(decoded.samples) >= 1 and np.isfinite(decoded.samples).all()
        assert decoded.source_channels <= limits.max_channels


# Consistent (format tag, bits) pairs: PCM and IEEE float.
ENCODINGS = st.sampled_from([(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)])
RATES = st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000, 384000])
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 2**32 - 1)
CHUNK_IDS = st.sampled_from([b"LIST", b"fact", b"JUNK", b"cue ", b"data", b"fmt "])
EXTRA_CHUNKS = st.lists(
    st.tuples(CHUNK_IDS, st.binary(max_size=16), st.one_of(st.none(), U32)), min_size=1, max_size=2
).map(
    lambda chunks: b"".join(
        name + struct.pack("<I", len(payload) if size is None else size) + payload
        for name, payload, size in chunks
    )
)
# What a lying header field can say instead of the truth.
LIES: dict[str, st.SearchStrategy] = {
    "riff": st.just(b"RIFX"),
    "rate": st.one_of(st.sampled_from([0, 1, 7999, 384001, 1_000_003, 2**31 - 1, 2**32 - 1]), U32),
    "channels": st.one_of(st.sampled_from([0, 32, 33, 1024, 1025]), U16),
    "bits": st.one_of(st.sampled_from([0, 4, 12, 20, 64]), U16),
    "format_tag": st.one_of(st.sampled_from([0, 2, 6, 7, 0x11, 0x31, 0x55, 0xFFFE]), U16),
    "data_size": st.one_of(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]), U32),
    "block_align": U16,
    "byte_rate": U32,
    "fmt_extra": st.binary(min_size=1, max_size=40),
    "fmt_size": U32,
    "extra_chunks": EXTRA_CHUNKS,
}
BODIES = st.one_of(
    st.binary(max_size=4096),
    # Quiet 16-bit-like noise of any length: decodes under most consistent headers.
    st.builds(
        lambda n, seed: np.random.default_rng(seed).integers(-2000, 2000, n, np.int16).tobytes(),
        st.integers(0, 4096),
        st.integers(0, 2**32 - 1),
    ),
    st.builds(
        lambda x: np.asarray(x, np.float32).tobytes(),
        st.lists(st.floats(-1, 1, width=32), max_size=1024),
    ),
    st.builds(
        lambda x: np.asarray(x, np.float32).tobytes(),
        st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=512),
    ),
)


@st.composite
def wav_files(draw: st.DrawFn) -> bytes:
    """WAV files whose header tells the truth but in up to three fields; some are cut short."""
    format_tag, bits = draw(ENCODINGS)
    fields = {"rate": draw(RATES), "channels": draw(st.integers(1, 8)), "bits": bits}
    fields["format_tag"] = format_tag
    lies = draw(st.sampled_from([0, 0, 1, 2, 3]))
    for name in draw(st.lists(st.sampled_from(sorted(LIES)), min_size=lies, max_size=lies)):
        fields[name] = draw(LIES[name])
    data = wav_bytes(body=draw(BODIES), **fields)
    cut = draw(st.sampled_from(["none", "none", "none", "head", "tail"]))
    if cut == "head":
        data = data[: draw(st.integers(0, len(data)))]
    elif cut == "tail":
        data = data[: len(data) - draw(st.integers(0, len(data)))]
    return data


@functools.cache
def encoded_seeds() -> tuple[bytes, ...]:
    rng = np.random.default_rng(2)
    noise = (rng.standard_normal((4000, 2)) * 0.1).astype(np.float32)
    return (
        encode(noise, 16000, "FLAC"),
        encode(noise, 22050, "OGG"),
        encode(noise[:, 0], 8000, "WAV", "PCM_16"),
        encode(noise, 44100, "WAV", "FLOAT"),
        encode(noise[:, 0], 16000, "MP3"),
    )


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    """Real FLAC / OGG / WAV / MP3 files with bytes overwritten, then possibly cut."""
    data = bytearray(draw(st.sampled_from(encoded_seeds())))
    for position, value in draw(
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=8)
    ):
        data[position] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data if cut is None else data[:cut])


@INGEST
@given(wav_files())
def test_generated_wav_headers_fail_typed_and_bounded(data: bytes):
    decode_within_bounds(data)


@INGEST
@given(damaged_files())
def test_damaged_real_files_fail_typed_and_bounded(data: bytes):
    decode_within_bounds(data)


@INGEST
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_fail_typed_and_bounded(data: bytes):
    decode_within_bounds(data, LIMITS)
