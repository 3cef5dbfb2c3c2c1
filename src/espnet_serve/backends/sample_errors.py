"""The batched backend's errors: per-sample results, and a model it cannot batch exactly."""

from __future__ import annotations


class SampleError(ValueError):
    """A sample that could not be decoded.

    ``BatchedSpeech2Text`` returns it *in the sample's slot* of a batch result
    (the other samples are decoded), and raises it for a single-array call.
    When the cause was an exception, it is chained as ``__cause__``. The two
    subclasses tell whose fault it was: :class:`InvalidSampleError` (the input)
    and :class:`SampleDecodeError` (the model or the machine).

    Attributes:
        index: Position of the sample in the batch it came in.
        reason: Short reason, e.g. ``"empty"``, ``"non-finite"``, ``"too short"``.
    """

    def __init__(self, index: int, reason: str, detail: str = "") -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"sample {index}: {reason}" + (f" ({detail})" if detail else ""))


class InvalidSampleError(SampleError):
    """The input cannot be decoded by this model: empty, not a waveform, too short, NaN."""


class SampleDecodeError(SampleError):
    """Decoding a valid input raised: a model bug, out of memory, a device failure."""


class UnbatchableModelError(NotImplementedError):
    """``BatchedSpeech2Text`` cannot decode this model (or these options) exactly in batches.

    Raised at construction; the session then builds the bundle's own per-utterance
    backend and decodes one clip at a time (``InferenceSession``, ``batched_backend``).
    """
