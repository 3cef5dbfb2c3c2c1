"""Length-sorted bucketing: similar lengths share a padded batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def length_buckets(
    lengths: Sequence[int], max_bucket_size: int, max_bucket_samples: int | None = None
) -> list[list[int]]:
    """Group sample indices into buckets of similar length, longest first.

    Samples are sorted by length (descending, ties in input order) and cut into
    consecutive runs, so each bucket's padding is bounded by the length spread
    of neighbours.

    Args:
        lengths: Length of each sample.
        max_bucket_size: Most samples per bucket.
        max_bucket_samples: Most padded samples per bucket (``size x longest``),
            or ``None`` for no bound. A sample longer than this gets a bucket alone.

    Returns:
        list[list[int]]: Indices into ``lengths``; each bucket longest first.

    Raises:
        ValueError: If ``max_bucket_size`` is not positive.
    """
    if max_bucket_size < 1:
        raise ValueError(f"max_bucket_size must be at least 1, got {max_bucket_size}.")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    for index in order:
        current = buckets[-1] if buckets else None
        fits = (
            current is not None
            and len(current) < max_bucket_size
            and (
                max_bucket_samples is None
                or lengths[current[0]] * (len(current) + 1) <= max_bucket_samples
            )
        )
        if fits and current is not None:
            current.append(index)
        else:
            buckets.append([index])
    return buckets


def per_clip(value: Any, count: int) -> list[Any]:
    """A batched call's option as one entry per clip: a list as given, or ``value`` repeated.

    Raises:
        ValueError: If a list has not ``count`` entries.
    """
    if isinstance(value, list | tuple):
        if len(value) != count:
            raise ValueError(f"An option has {len(value)} entries for {count} clips.")
        return list(value)
    return [value] * count
