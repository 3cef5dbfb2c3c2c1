"""A realtime session's audio: appended bytes in, utterances (speech turns) out.

The client's bytes (16-bit PCM at the session's rate, or G.711 at 8 kHz) are decoded and
resampled to the model's rate as they arrive (soxr's streaming resampler, as uploads are).
With server VAD, the same segmenter that cuts uploads (:class:`~espnet_serve.audio.segmenter.
Segmenter`, Silero VAD) closes each utterance after the session's silence; without it, the
audio is held until the client commits it. Not thread-safe: one session, one caller.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile
import soxr

from espnet_serve.audio.ingest import RESAMPLER_QUALITY
from espnet_serve.audio.segmenter import AudioSegment, SegmentationOptions, Segmenter
from espnet_serve.serving.realtime.protocol import AudioFormat, ServerVad

PCM16_SCALE = 32768.0
G711_SUBTYPES = {"audio/pcmu": "ULAW", "audio/pcma": "ALAW"}
# How far below the start threshold the speech probability must fall to count as silence
# (the uploads' measured pair is 0.6 / 0.55).
SILENCE_MARGIN = 0.05
# Audio kept after an utterance's speech (measured for uploads: more makes the model insert).
PAD_AFTER_SECONDS = 0.03
LONGEST_TURN_SECONDS = 10.0  # longer speech is cut, as uploads are (the models' clip length)
# A streaming model hears an utterance in chunks of at least this (more often yields nothing
# new: its encoder works in blocks of hundreds of milliseconds) ...
STREAM_PUSH_SECONDS = 0.2
# ... with this much kept back for the final chunk (a final chunk of a few frames is too short
# for the encoder's convolutional subsampling).
STREAM_HOLD_SECONDS = 0.1


def segmentation_options(vad: ServerVad) -> SegmentationOptions:
    """The segmenter's options for the session's server VAD settings."""
    silence = vad.silence_duration_ms / 1000
    return SegmentationOptions(
        threshold=vad.threshold,
        neg_threshold=max(0.01, vad.threshold - SILENCE_MARGIN),
        min_silence_seconds=silence,
        max_segment_seconds=max(LONGEST_TURN_SECONDS, 2 * silence + 1.0),
        pad_before_seconds=vad.prefix_padding_ms / 1000,
        pad_after_seconds=PAD_AFTER_SECONDS,
    )


class AudioTurns:
    """Decodes appended audio and cuts it into turns.

    Args:
        audio_format: What the client appends.
        model_rate: The model's sample rate.
        vad: Server VAD settings; None: the client commits each turn.
    """

    def __init__(self, audio_format: AudioFormat, model_rate: int, vad: ServerVad | None) -> None:
        self.audio_format = audio_format
        self.model_rate = model_rate
        self.vad = vad
        self._resampler = (
            None
            if audio_format.sample_rate == model_rate
            else soxr.ResampleStream(
                audio_format.sample_rate, model_rate, 1, dtype="float32", quality=RESAMPLER_QUALITY
            )
        )
        self._odd_byte = b""
        self._segmenter: Segmenter | None = None
        self._held: list[np.ndarray] = []  # without VAD: the audio since the last commit
        self._segment_origin = 0  # model-rate samples before the current segmenter's start
        self.samples_in = 0  # model-rate samples appended since the session started
        self._fresh: list[np.ndarray] = []  # model-rate samples not yet taken (take_fresh)
        self.turns_closed = 0
        self._reset()

    @property
    def speech_started_at(self) -> float | None:
        """With server VAD, the start of the speech in progress (session seconds)."""
        if self._segmenter is None or self._segmenter.speech_started_at is None:
            return None
        return self._segment_origin / self.model_rate + self._segmenter.speech_started_at

    @property
    def buffered_seconds(self) -> float:
        """Seconds of audio held for the turn in progress (without VAD: since the last commit)."""
        held = sum(len(block) for block in self._held)
        return held / self.model_rate

    def append(self, data: bytes) -> list[AudioSegment]:
        """Decode ``data``; return the turns it closes (server VAD), timed in session seconds."""
        samples = self._decode(data)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return self._take(samples)

    def commit(self) -> list[AudioSegment]:
        """Close the turn in progress (all held audio without VAD); may be none.

        The resampler's delay (its last few milliseconds) is flushed into the turn first.
        """
        turns = []
        if self._resampler is not None:
            turns = self._take(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._resampler.clear()
        if self._segmenter is not None:
            turns += self._turns(self._segmenter.finish())
            self._reset()
            return turns
        samples = np.concatenate(self._held) if self._held else np.zeros(0, np.float32)
        start = (self.samples_in - len(samples)) / self.model_rate
        self._held = []
        if not len(samples):
            return []
        segment = AudioSegment(
            index=self.turns_closed,
            start=start,
            end=start + len(samples) / self.model_rate,
            offset=start,
            samples=samples,
            no_speech_prob=0.0,
        )
        self.turns_closed += 1
        return [segment]

    def take_fresh(self) -> np.ndarray:
        """The model-rate samples appended (and flushed by a commit) since the last call."""
        fresh = np.concatenate(self._fresh) if self._fresh else np.zeros(0, np.float32)
        self._fresh = []
        return fresh

    def open_turn_samples(self) -> np.ndarray:
        """With server VAD, the audio of the speech in progress so far, lead-in included."""
        if self._segmenter is None:
            return np.zeros(0, np.float32)
        return self._segmenter.open_region_samples()

    def _take(self, samples: np.ndarray) -> list[AudioSegment]:
        """Model-rate samples into the turn in progress; the turns they close."""
        self.samples_in += len(samples)
        self._fresh.append(samples)
        if self._segmenter is None:
            self._held.append(samples)
            return []
        return self._turns(self._segmenter.push(samples))

    def clear(self) -> None:
        """Drop the audio not yet committed (the turn in progress too)."""
        self._held = []
        self._reset()

    def _reset(self) -> None:
        """A fresh segmenter from the current position (server VAD)."""
        self._segment_origin = self.samples_in
        self._segmenter = (
            None
            if self.vad is None
            else Segmenter(self.model_rate, segmentation_options(self.vad), whole_if_short=False)
        )

    def _turns(self, segments: list[AudioSegment]) -> list[AudioSegment]:
        """The segmenter's segments as turns: numbered and timed from the session's start."""
        origin = self._segment_origin / self.model_rate
        turns = []
        for segment in segments:
            turns.append(
                AudioSegment(
                    index=self.turns_closed,
                    start=origin + segment.start,
                    end=origin + segment.end,
                    offset=origin + segment.offset,
                    samples=segment.samples,
                    no_speech_prob=segment.no_speech_prob,
                )
            )
            self.turns_closed += 1
        return turns

    def _decode(self, data: bytes) -> np.ndarray:
        """Float32 samples of ``data`` in the session's format (an odd PCM byte waits)."""
        kind = self.audio_format.type
        if kind in G711_SUBTYPES:
            if not data:
                return np.zeros(0, np.float32)
            samples, _ = soundfile.read(
                io.BytesIO(data),
                format="RAW",
                subtype=G711_SUBTYPES[kind],
                samplerate=self.audio_format.sample_rate,
                channels=1,
                dtype="float32",
            )
            return samples
        data = self._odd_byte + data
        whole = len(data) - len(data) % 2
        self._odd_byte = data[whole:]
        return np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / PCM16_SCALE


class StreamChunker:
    """Cuts one utterance's audio into the chunks a streaming model is sent.

    Args:
        model_rate: The model's sample rate.
    """

    def __init__(self, model_rate: int) -> None:
        self._pending: list[np.ndarray] = []
        self._count = 0
        self._push = round(STREAM_PUSH_SECONDS * model_rate)
        self._hold = round(STREAM_HOLD_SECONDS * model_rate)

    def add(self, samples: np.ndarray) -> np.ndarray | None:
        """Take ``samples``; the next chunk to send once enough is held (else None)."""
        if len(samples):
            self._pending.append(samples)
            self._count += len(samples)
        if self._count < self._push + self._hold:
            return None
        held = np.concatenate(self._pending)
        cut = len(held) - self._hold
        self._pending, self._count = [held[cut:]], self._hold
        return held[:cut]

    def keep(self, samples: np.ndarray) -> None:
        """Take ``samples`` for the final chunk (the utterance is ending: nothing is sent)."""
        if len(samples):
            self._pending.append(samples)
            self._count += len(samples)

    def final(self) -> np.ndarray:
        """Everything not yet sent: the utterance's final chunk."""
        rest = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
        self._pending, self._count = [], 0
        return rest
