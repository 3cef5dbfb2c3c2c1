"""One sample of a batch checked as a waveform: what every batched backend refuses alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from espnet_serve.backends.encoding import extract_features, too_short_for_subsampling
from espnet_serve.backends.sample_errors import InvalidSampleError


def checked_waveform(index: int, sample: Any, min_samples: int, device: str) -> torch.Tensor:
    """``sample`` as a float32 1-D tensor on ``device``.

    Args:
        index: The sample's position in its batch (named by the error).
        sample: A numpy array, tensor or sequence of numbers.
        min_samples: The fewest samples the model decodes.
        device: Torch device.

    Raises:
        InvalidSampleError: If it is not a 1-D real numeric array, is empty, shorter
            than ``min_samples``, or holds NaN or inf.
    """
    if isinstance(sample, torch.Tensor):
        wave = sample.detach()
    else:
        try:
            wave = torch.as_tensor(np.asarray(sample))
        except (TypeError, ValueError, RuntimeError) as error:
            raise InvalidSampleError(index, "not a numeric array", str(error)) from error
    if wave.dtype == torch.bool or wave.is_complex() or wave.ndim != 1:
        raise InvalidSampleError(
            index, "not a 1-D real waveform", f"dtype {wave.dtype}, shape {tuple(wave.shape)}"
        )
    if wave.numel() == 0:
        raise InvalidSampleError(index, "empty")
    if wave.numel() < min_samples:
        raise InvalidSampleError(
            index,
            "too short",
            f"{wave.numel()} samples; the model needs at least {min_samples}",
        )
    wave = wave.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(wave).all()):
        raise InvalidSampleError(index, "non-finite", "the waveform holds NaN or inf")
    return wave


def checked_features(
    model: Any, index: int, sample: Any, min_samples: int, device: str
) -> torch.Tensor:
    """A checked waveform's front-end features ``(frames, dim)`` (:func:`checked_waveform`).

    Args:
        model: An espnet2 model with ``_extract_feats`` and ``encoder`` (ASR, ST).
        index: The sample's position in its batch.
        sample: The waveform.
        min_samples: The fewest samples the model decodes.
        device: Torch device.

    Raises:
        InvalidSampleError: As :func:`checked_waveform`, or when its features are too few
            frames for the encoder's subsampling.
    """
    wave = checked_waveform(index, sample, min_samples, device)
    feats = extract_features(model, wave)
    needed = too_short_for_subsampling(model, feats.size(0))
    if needed is not None:
        raise InvalidSampleError(
            index,
            "too short",
            f"{wave.numel()} samples give {feats.size(0)} frames; the encoder needs "
            f"at least {needed}",
        )
    return feats
