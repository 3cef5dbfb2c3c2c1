"""Cut a stream of audio blocks into speech segments that the model decodes well.

Speech regions follow Silero VAD's rules (:mod:`espnet_serve.audio.vad`): a
region starts at a window whose speech probability reaches ``threshold`` and
ends once the probability has stayed below ``neg_threshold`` for
``min_silence_seconds``; regions shorter than ``min_speech_seconds`` are
dropped, and a region reaching ``max_segment_seconds`` is cut at its least
speech-like window in its second half. Each segment carries its region's audio
with ``pad_before_seconds`` of lead-in and ``pad_after_seconds`` after it
(measured on a development file: the embedded model needs the onset, and more
than a few tens of milliseconds of trailing noise makes it insert words).

Memory is bounded by the longest segment, not by the file: audio before the
current region (less the lead-in) is dropped as the stream advances.

A recording of at most ``max_segment_seconds`` with at most one speech region
is returned whole, as one segment: a short clip is decoded as the model was
trained, on the whole clip (measured on the embedded model's held-out clips:
0.44 % WER whole, 0.87 % cut to the voice-activity region), and a silent one
is still decoded. Two strings of digits with a pause between them, decoded as
one clip, came out at 33 % WER: from a second region on, the recording is cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import soxr

from espnet_serve.audio.vad import VAD_SAMPLE_RATE, WINDOW_SAMPLES, SpeechProbabilities


@dataclass(frozen=True)
class SegmentationOptions:
    """How speech is found and cut (defaults measured on the embedded model; ``bench/longform.py``).

    Attributes:
        threshold: Speech probability that starts a region.
        neg_threshold: Probability below which silence is counted.
        min_silence_seconds: Silence that ends a region.
        min_speech_seconds: Shortest region kept.
        max_segment_seconds: Longest segment; longer speech is cut.
        pad_before_seconds: Audio kept before each region's start.
        pad_after_seconds: Audio kept after each region's end.
    """

    threshold: float = 0.6
    neg_threshold: float = 0.55
    min_silence_seconds: float = 0.3
    min_speech_seconds: float = 0.1
    max_segment_seconds: float = 10.0
    pad_before_seconds: float = 0.2
    pad_after_seconds: float = 0.03

    def __post_init__(self) -> None:
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError("Need 0 < neg_threshold <= threshold < 1.")
        if self.max_segment_seconds <= 2 * self.min_silence_seconds:
            raise ValueError("max_segment_seconds must exceed twice min_silence_seconds.")


@dataclass(frozen=True, eq=False)
class AudioSegment:
    """One segment of a recording.

    Attributes:
        index: Position in the recording (0, 1, ...).
        start: Start of the speech, in seconds from the beginning of the recording.
        end: End of the speech, in seconds.
        offset: Where ``samples`` begins, in seconds (``start`` less the lead-in).
        samples: Mono float32 audio at the model's rate, padding included.
        no_speech_prob: One minus the mean speech probability of the region.
    """

    index: int
    start: float
    end: float
    offset: float
    samples: np.ndarray
    no_speech_prob: float

    @classmethod
    def whole(cls, index: int, samples: np.ndarray, sample_rate: int) -> AudioSegment:
        """A whole clip as one segment (start 0, its duration, no voice-activity figures)."""
        return cls(index, 0.0, len(samples) / sample_rate, 0.0, samples, 0.0)


class Segmenter:
    """Streaming segmentation: :meth:`push` blocks, then :meth:`finish`.

    Args:
        sample_rate: Rate of the blocks (the model's); the VAD hears a 16 kHz copy.
        options: Thresholds and lengths.
        declared_seconds: The recording's length as its header declares it: at most
            ``max_segment_seconds`` skips the VAD (one whole segment) unless the audio
            turns out longer.
        whole_if_short: Return a recording of at most ``max_segment_seconds`` with at most
            one speech region whole (see the module's notes). A live stream, whose end is
            not known, passes False: each region comes out as soon as it closes.
    """

    def __init__(
        self,
        sample_rate: int,
        options: SegmentationOptions | None = None,
        declared_seconds: float | None = None,
        *,
        whole_if_short: bool = True,
    ) -> None:
        self.options = options or SegmentationOptions()
        self.sample_rate = sample_rate
        short = (
            declared_seconds is not None and declared_seconds <= self.options.max_segment_seconds
        )
        self._vad: SpeechProbabilities | None = None if short else SpeechProbabilities()
        self._to_vad_rate = (
            None
            if sample_rate == VAD_SAMPLE_RATE
            else soxr.ResampleStream(sample_rate, VAD_SAMPLE_RATE, 1, dtype="float32")
        )
        self._window = WINDOW_SAMPLES * sample_rate / VAD_SAMPLE_RATE  # samples per window
        seconds = self.options
        self._min_silence = _windows(seconds.min_silence_seconds)
        self._min_speech = _windows(seconds.min_speech_seconds)
        self._max_windows = _windows(seconds.max_segment_seconds)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # sample index of _buffer[0]
        self._total = 0
        self._probs: list[float] = []  # probabilities of windows _probs_start, ...
        self._probs_start = 0
        self._window_index = 0
        self._region_start: int | None = None
        self._silence_start: int | None = None
        self._emitted = 0
        # Segments held back while the recording may be returned whole; None once it is cut.
        self._held: list[AudioSegment] | None = [] if whole_if_short else None

    def push(self, block: np.ndarray) -> list[AudioSegment]:
        """Add the next block; return the segments it completes."""
        block = np.asarray(block, dtype=np.float32)
        self._buffer = np.concatenate([self._buffer, block])
        self._total += len(block)
        if self._vad is None:
            if self._short:
                return []
            held, self._buffer, self._total = self._buffer, np.zeros(0, np.float32), 0
            self._vad = SpeechProbabilities()  # longer than declared: segment it after all
            return self.push(held)
        vad_block = block if self._to_vad_rate is None else self._to_vad_rate.resample_chunk(block)
        return self._release(self._advance(self._vad.push(vad_block)))

    def finish(self) -> list[AudioSegment]:
        """End of the stream: the segments still open (or the whole short recording)."""
        if self._vad is None:
            return [AudioSegment.whole(0, self._buffer.copy(), self.sample_rate)]
        tail = np.zeros(0, np.float32)
        if self._to_vad_rate is not None:
            tail = self._to_vad_rate.resample_chunk(tail, last=True)
        segments = self._advance(self._vad.push(tail, last=True))
        if self._region_start is not None:
            segments += self._close(self._region_start, self._window_index)
        if self._held is not None and len(self._held) + len(segments) <= 1 and self._short:
            return [self._whole_recording([*self._held, *segments])]
        return self._release(segments, final=True)

    @property
    def speech_started_at(self) -> float | None:
        """Start of the speech region still open, in seconds from the stream's start."""
        if self._region_start is None:
            return None
        return round(self._region_start * self._window) / self.sample_rate

    def open_region_samples(self) -> np.ndarray:
        """The audio of the speech region still open, lead-in included, up to now."""
        if self._region_start is None:
            return np.zeros(0, np.float32)
        start = round(self._region_start * self._window)
        lead_in = max(
            self._buffer_start, start - round(self.options.pad_before_seconds * self.sample_rate)
        )
        return self._buffer[lead_in - self._buffer_start :].copy()

    @property
    def _short(self) -> bool:
        """Whether the recording so far fits one segment."""
        return self._total <= self.options.max_segment_seconds * self.sample_rate

    def _release(self, segments: list[AudioSegment], *, final: bool = False) -> list[AudioSegment]:
        """Hold segments back while the recording may still be returned whole."""
        if self._held is None:
            return segments
        self._held += segments
        if len(self._held) < 2 and self._short and not final:
            return []
        released, self._held = self._held, None
        return released

    def _advance(self, probs: list[float]) -> list[AudioSegment]:
        """Run the region state machine over new window probabilities."""
        options, segments = self.options, []
        for prob in probs:
            index = self._window_index
            self._probs.append(prob)
            self._window_index += 1
            if self._region_start is None:
                if prob >= options.threshold:
                    self._region_start, self._silence_start = index, None
                else:
                    self._forget_before(index)
                continue
            if prob >= options.threshold:
                self._silence_start = None
            elif prob < options.neg_threshold and self._silence_start is None:
                self._silence_start = index
            if (
                self._silence_start is not None
                and index + 1 - self._silence_start >= self._min_silence
            ):
                segments += self._close(self._region_start, self._silence_start)
                self._region_start = self._silence_start = None
            elif index + 1 - self._region_start >= self._max_windows:
                cut = self._least_speech_like(self._region_start, index + 1)
                segments += self._close(self._region_start, cut)
                self._region_start, self._silence_start = cut, None
        return segments

    def _least_speech_like(self, first: int, stop: int) -> int:
        """The window in the second half of ``[first, stop)`` with the lowest probability."""
        middle = first + (stop - first) // 2
        window = self._probs[middle - self._probs_start : stop - self._probs_start]
        return middle + int(np.argmin(window))

    def _close(self, first: int, stop: int) -> list[AudioSegment]:
        """The segment of windows ``[first, stop)``, if long enough; drop audio before it."""
        if stop - first < self._min_speech:
            self._forget_before(stop)
            return []
        rate = self.sample_rate
        start, end = round(first * self._window), min(round(stop * self._window), self._total)
        lead_in = max(self._buffer_start, start - round(self.options.pad_before_seconds * rate))
        tail = min(self._total, end + round(self.options.pad_after_seconds * rate))
        samples = self._buffer[lead_in - self._buffer_start : tail - self._buffer_start].copy()
        probs = self._probs[first - self._probs_start : stop - self._probs_start]
        segment = AudioSegment(
            index=self._emitted,
            start=start / rate,
            end=end / rate,
            offset=lead_in / rate,
            samples=samples,
            no_speech_prob=round(1.0 - float(np.mean(probs)), 4),
        )
        self._emitted += 1
        self._forget_before(stop)
        return [segment]

    def _forget_before(self, window: int) -> None:
        """Drop audio (but the lead-in) and probabilities before ``window``.

        While the recording may still be returned whole, it is all kept.
        """
        if self._held is not None and self._short:
            return
        keep_from = max(
            self._buffer_start,
            round(window * self._window)
            - round(self.options.pad_before_seconds * self.sample_rate),
        )
        self._buffer = self._buffer[keep_from - self._buffer_start :]
        self._buffer_start = keep_from
        self._probs = self._probs[window - self._probs_start :]
        self._probs_start = window

    def _whole_recording(self, regions: list[AudioSegment]) -> AudioSegment:
        """The whole (short) recording as one segment, timed by its speech region if any."""
        duration = self._total / self.sample_rate
        if regions:
            (region,) = regions
            start, end, no_speech = region.start, region.end, region.no_speech_prob
        else:
            probs = self._probs or [0.0]
            start, end, no_speech = 0.0, duration, round(1.0 - float(np.mean(probs)), 4)
        return AudioSegment(
            index=0,
            start=start,
            end=end,
            offset=0.0,
            samples=self._buffer.copy(),
            no_speech_prob=no_speech,
        )


def _windows(seconds: float) -> int:
    """VAD windows in ``seconds`` (at least one)."""
    return max(1, round(seconds * VAD_SAMPLE_RATE / WINDOW_SAMPLES))


def segment_stream(
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    options: SegmentationOptions | None = None,
    declared_seconds: float | None = None,
) -> Iterator[AudioSegment]:
    """Segments of a stream of audio blocks, in order, as soon as each is complete."""
    segmenter = Segmenter(sample_rate, options, declared_seconds)
    for block in blocks:
        yield from segmenter.push(block)
    yield from segmenter.finish()
