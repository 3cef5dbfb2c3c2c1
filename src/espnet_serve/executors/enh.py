"""Speech enhancement and separation: espnet2's ``SeparateSpeech``.

One recording in, one track per speaker out (one track for enhancement), at the
model's sample rate, each as ``SeparateSpeech`` returns it.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np

from espnet_serve.executors.base import ENHANCE, FamilyExecutor

SEPARATE_SPEECH = "espnet2.bin.enh_inference.SeparateSpeech"


class EnhExecutor(FamilyExecutor):
    """Enhances or separates speech with ``espnet2.bin.enh_inference.SeparateSpeech``.

    Args:
        session: An ``InferenceSession`` whose backend is ``SeparateSpeech``.
    """

    family: ClassVar[str] = "enh"
    tasks: ClassVar[tuple[str, ...]] = (ENHANCE,)
    inference_classes: ClassVar[tuple[str, ...]] = (SEPARATE_SPEECH,)
    unbatched_reason: ClassVar[str] = (
        "one recording per call: separators normalise over the whole signal (a TCN's "
        "global layer norm, an RNN over all frames), so a padded batch answers otherwise"
    )

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._lock = threading.Lock()

    @property
    def tracks(self) -> int:
        """How many tracks come out: the speakers separated (1: enhancement)."""
        return int(self.backend.num_spk)

    def enhance(self, samples: np.ndarray, sample_rate: int) -> list[np.ndarray]:
        """The tracks of one mono recording, float32, each as long.

        Args:
            samples: The recording at the model's rate.
            sample_rate: That rate (recorded at import; ``SeparateSpeech`` is told it).
        """
        with self._lock:
            outputs = self.backend(samples[np.newaxis, :], fs=sample_rate)
        return [np.asarray(track, dtype=np.float32).reshape(-1) for track in outputs]
