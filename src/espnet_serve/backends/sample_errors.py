"""The batched backend's errors: per-sample results, and a model it cannot batch exactly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Output = TypeVar("Output")


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


def decode_failure(index: int, error: Exception) -> SampleDecodeError:
    """A ``SampleError`` for a sample whose decoding raised ``error`` (chained as its cause)."""
    failure = SampleDecodeError(index, "decoding failed", f"{type(error).__name__}: {error}")
    failure.__cause__ = error
    return failure


def decode_or_split(
    members: list[int], decode: Callable[[list[int]], Sequence[Output]]
) -> list[Output | SampleError]:
    """``decode(members)``; if that raises, each member alone, a failure in its own slot.

    Args:
        members: Batch positions decoded together (one padded pass).
        decode: Decodes some of them, one output per position, in order.
    """
    try:
        return list(decode(members))
    except Exception as error:
        if len(members) == 1:
            return [decode_failure(members[0], error)]
    results: list[Any] = []
    for index in members:
        try:
            results.append(decode([index])[0])
        except Exception as error:
            results.append(decode_failure(index, error))
    return results


def decode_in_buckets(
    samples: Sequence[Any],
    prepare: Callable[[int, Any], Any],
    decode: Callable[[list[int], list[Any]], Sequence[Output]],
    max_bucket_size: int,
    max_bucket_samples: int | None = None,
) -> list[Output | SampleError]:
    """A batched backend's call: each sample prepared, then decoded by length bucket.

    Args:
        samples: The waveforms, in call order.
        prepare: ``(index, sample) -> prepared`` (e.g. checked features); raises
            :class:`SampleError` for a sample that cannot be decoded, which keeps it in its slot.
        decode: ``(indices, prepared) -> outputs`` for one bucket (one padded pass).
        max_bucket_size: Most samples per bucket.
        max_bucket_samples: Most padded samples per bucket (``None``: no bound).

    Returns:
        One output or :class:`SampleError` per sample, in order (a failing bucket is
        decoded member by member, :func:`decode_or_split`).
    """
    from espnet_serve.backends.bucketing import length_buckets

    results: dict[int, Any] = {}
    prepared: dict[int, Any] = {}
    for index, sample in enumerate(samples):
        try:
            prepared[index] = prepare(index, sample)
        except SampleError as error:
            results[index] = error
    indices = list(prepared)
    lengths = [len(samples[i]) for i in indices]
    for bucket in length_buckets(lengths, max_bucket_size, max_bucket_samples):
        members = [indices[position] for position in bucket]
        decoded = decode_or_split(members, lambda part: decode(part, [prepared[i] for i in part]))
        for index, result in zip(members, decoded, strict=True):
            results[index] = result
    return [results[index] for index in range(len(samples))]
