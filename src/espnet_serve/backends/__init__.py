"""Batched inference backends for espnet2 models.

``BatchedSpeech2Text`` decodes many utterances per call (one padded encoder
forward per length bucket, vectorised greedy CTC or joint CTC/attention beam
search) with ``Speech2Text``'s options and output, and returns a
:class:`SampleError` in the slot of a sample that cannot be decoded.
"""

from espnet_serve.backends.sample_errors import (
    InvalidSampleError,
    SampleDecodeError,
    SampleError,
    UnbatchableModelError,
)
from espnet_serve.backends.speech2text import BatchedSpeech2Text

__all__ = [
    "BatchedSpeech2Text",
    "InvalidSampleError",
    "SampleDecodeError",
    "SampleError",
    "UnbatchableModelError",
]
