"""Load models offline and without training tools: nothing downloads, nothing training-only.

Importing ``espnet2.tasks.asr`` imports ``g2p_en``, which calls
``nltk.download`` for data it does not find. Offline that prints errors, and
in a pod without egress it can hang on DNS. ASR inference never needs that
data, so downloads are refused unless ``ESPNET_SERVE_ALLOW_DOWNLOADS=1``.

Some espnet2 models import a training-only package while they are built:
``ESPnetASRModel`` with ``decoder: transducer`` imports ``warprnnt_pytorch`` (the
compiled warp-transducer loss) in its constructor, and only ever calls it in
training. :func:`training_only_stand_ins` lets such a model build when the package
is not installed; the stand-in raises if anything calls it. (``espnet2.asr_transducer``
imports its losses, ``warprnnt_pytorch`` and ``k2``, only when computing a loss.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

ALLOW_DOWNLOADS_ENV = "ESPNET_SERVE_ALLOW_DOWNLOADS"
# Packages espnet2 imports while building a model, but uses only in training: the names it
# imports from each.
TRAINING_ONLY = {"warprnnt_pytorch": ("RNNTLoss",)}


def _refuse_download(info_or_id: object = None, *args: object, **kwargs: object) -> bool:
    """Stand-in for ``nltk.download`` that downloads nothing."""
    logger.debug("Refused nltk download of %r; %s=1 allows it.", info_or_id, ALLOW_DOWNLOADS_ENV)
    return False


def block_runtime_downloads() -> None:
    """Make ``nltk.download`` a no-op unless downloads are explicitly allowed."""
    if os.environ.get(ALLOW_DOWNLOADS_ENV) == "1":
        return
    import nltk

    nltk.download = _refuse_download


@contextlib.contextmanager
def training_only_stand_ins() -> Iterator[None]:
    """While open, each missing :data:`TRAINING_ONLY` package imports as a stand-in.

    The stand-in's classes construct (as parameterless ``torch.nn.Module`` s, so a
    checkpoint loads as it was saved) and raise ``RuntimeError`` if ever called.
    Installed packages are left alone; the stand-ins leave ``sys.modules`` on exit.
    """
    added = []
    for name, attributes in TRAINING_ONLY.items():
        if name in sys.modules or importlib.util.find_spec(name) is not None:
            continue
        module = types.ModuleType(name, f"espnet-serve stand-in: {name} is training-only.")
        for attribute in attributes:
            setattr(module, attribute, _training_only_class(f"{name}.{attribute}"))
        sys.modules[name] = module
        added.append(name)
        logger.debug("%s is not installed: a stand-in is imported while the model builds.", name)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _training_only_class(qualified_name: str) -> type:
    """A ``torch.nn.Module`` class that builds with any arguments and refuses to run."""
    import torch

    def __init__(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        torch.nn.Module.__init__(self)

    def forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{qualified_name} is training-only and not installed; inference never calls it."
        )

    return type(
        qualified_name.rsplit(".", 1)[-1],
        (torch.nn.Module,),
        {"__init__": __init__, "forward": forward, "__doc__": f"Stand-in for {qualified_name}."},
    )
