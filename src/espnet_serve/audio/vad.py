"""Voice activity: Silero VAD's speech probability for each 32 ms window of a stream.

Chosen by measurement (``bench/longform.py --compare-vad``; ``bench/README.md``): on the
10-minute synthetic file, Silero's regions matched all 262 digit strings one to one (segment
start error median 22 ms) and decoded at 2.0 % WER, where webrtcvad (172 regions, 23.0 %)
and an energy threshold (172 regions, 29.6 %) merged strings across pauses.
Its model ships inside the ``silero-vad`` wheel (MIT) and runs on torch, already a
dependency: nothing is downloaded.
"""

from __future__ import annotations

import queue
import threading
import warnings
from typing import Any

import numpy as np
import torch

VAD_SAMPLE_RATE = 16000
WINDOW_SAMPLES = 512  # Silero's window at 16 kHz (32 ms)
_LOAD_LOCK = threading.Lock()
# Loaded models not in use: loading one takes ~0.1 s and its first calls are slow, so streams
# reuse them (each model is stateful: one stream at a time, states reset on reuse).
_IDLE_MODELS: queue.SimpleQueue = queue.SimpleQueue()


def _load_model() -> Any:
    """Silero's TorchScript model from the wheel, leaving torch's thread count as it was.

    ``silero_vad.model`` sets ``torch.set_num_threads(1)`` when imported; the ASR
    model in the same process must keep its threads.
    """
    with _LOAD_LOCK:
        threads = torch.get_num_threads()
        try:
            from silero_vad import load_silero_vad

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation
                return load_silero_vad(onnx=False)
        finally:
            torch.set_num_threads(threads)


class SpeechProbabilities:
    """Speech probability of each :data:`WINDOW_SAMPLES` window of 16 kHz audio, streamed.

    Feed blocks of any length with :meth:`push`; each full window gets a
    probability, in order. The model is stateful: one instance per stream.
    """

    def __init__(self) -> None:
        try:
            self._model = _IDLE_MODELS.get_nowait()
        except queue.Empty:
            self._model = _load_model()
        self._model.reset_states()
        self._pending = np.zeros(0, dtype=np.float32)

    @torch.inference_mode()
    def push(self, block: np.ndarray, *, last: bool = False) -> list[float]:
        """Probabilities of the windows completed by ``block`` (``last``: pad the rest).

        Runs on one torch thread (then restores the count): the model is a small
        recurrent network called once per window, and more threads only spin when
        the other core is busy (3x real time on two threads then). About 45x real
        time on a quiet core: 0.65 ms per 32 ms window, mostly TorchScript call overhead.
        """
        samples = np.concatenate([self._pending, np.asarray(block, dtype=np.float32)])
        full = len(samples) // WINDOW_SAMPLES
        if last and len(samples) % WINDOW_SAMPLES:
            samples = np.pad(samples, (0, WINDOW_SAMPLES - len(samples) % WINDOW_SAMPLES))
            full += 1
        self._pending = samples[full * WINDOW_SAMPLES :]
        windows = torch.from_numpy(np.ascontiguousarray(samples[: full * WINDOW_SAMPLES]))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [
                float(self._model(window, VAD_SAMPLE_RATE))
                for window in windows.view(full, WINDOW_SAMPLES)
            ]
        finally:
            torch.set_num_threads(threads)
            if last:
                self._release()

    def _release(self) -> None:
        """Hand the model to the next stream (after the last block)."""
        if self._model is not None:
            _IDLE_MODELS.put(self._model)
            self._model = None
