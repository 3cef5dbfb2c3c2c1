"""Where the models run: a model service of their own, or inside every API worker.

Two shapes serve the same API (README, "Where the models run"):

- **model services**: one BentoML model service worker per model batches the segments of
  every API worker, over a loopback HTTP hop. The shape for a GPU (one batching worker owns
  it), for models too large to copy into each worker, and the chart's split mode.
- **in the API workers**: each API worker loads every model and batches its own segments
  (:mod:`~espnet_serve.serving.local_model`), one worker per CPU and one torch thread each.
  On a CPU pod serving small models the hop costs as much CPU per request as the decode:
  on 2 cores this shape gave 0.8-0.9 of in-process batching at 32 and 128 clients where the
  model services gave 0.45-0.65 (``bench/README.md``).

``ESPNET_SERVE_MODEL_IN_PROCESS=auto`` (the default) picks the second on a machine without a
GPU when the served models together are small (:data:`SMALL_MODELS_MIB`), the first
otherwise; ``true`` or ``false`` decide outright.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from espnet_serve.serving.settings import AUTO, ServeSettings

# The served models' size on disk (the model store) up to which, without a GPU, every API
# worker holds a copy: the embedded models are 16 MiB together. Larger models decode long
# enough that the hop is a small share of a request, and a copy per CPU adds up.
SMALL_MODELS_MIB = 64


@dataclass(frozen=True)
class Placement:
    """The resolved shape of a server.

    Attributes:
        in_api_workers: Each API worker loads and batches the models itself (no model
            service runs).
        api_workers: Worker processes of the API service.
        model_threads: Torch threads of each model's worker (None: torch's default).
        reason: Why, in words (logged at start).
    """

    in_api_workers: bool
    api_workers: int
    model_threads: int | None
    reason: str


def resolve_placement(
    settings: ServeSettings, *, gpus: int, cpus: int, models_bytes: Callable[[], int]
) -> Placement:
    """The shape ``settings`` ask for on a machine with ``gpus`` GPUs and ``cpus`` CPUs.

    Args:
        settings: The service settings (``model_in_process``, ``api_workers``,
            ``model_threads``, ``gpu_count``).
        gpus: NVIDIA GPUs the machine has.
        cpus: CPUs this process may use (its cgroup's quota, where it has one).
        models_bytes: The served models' size on disk, asked only where it decides.
    """
    if settings.model_in_process != AUTO:
        in_api, reason = settings.model_in_process, "ESPNET_SERVE_MODEL_IN_PROCESS"
    elif settings.gpu_count > 0 and gpus > 0:
        in_api, reason = False, f"auto: {gpus} GPU(s), one batching model worker each model"
    elif (mib := models_bytes() / 2**20) > SMALL_MODELS_MIB:
        in_api, reason = False, f"auto: the models take {mib:.0f} MiB, over {SMALL_MODELS_MIB}"
    else:
        in_api = True
        reason = f"auto: no GPU, the models take {mib:.0f} MiB (up to {SMALL_MODELS_MIB})"
    cpus = max(1, cpus)
    auto_workers = cpus if in_api else 1
    workers = auto_workers if settings.api_workers == AUTO else settings.api_workers
    threads = settings.model_threads
    if threads is None and in_api:
        threads = max(1, cpus // workers)  # the CPUs shared out among the workers
    return Placement(in_api, workers, threads, reason)


def describe(placement: Placement) -> str:
    """One line for the log: where the models run and why."""
    where = "in each API worker" if placement.in_api_workers else "in their model services"
    threads = placement.model_threads or "torch's default"
    return (
        f"Models {where} ({placement.reason}); {placement.api_workers} API worker(s), "
        f"model threads: {threads}."
    )


def machine_placement(settings: ServeSettings, models_bytes: Callable[[], int]) -> Placement:
    """:func:`resolve_placement` on this machine: its NVIDIA GPUs and the CPUs it may use."""
    from bentoml._internal.resource import CpuResource, NvidiaGpuResource

    return resolve_placement(
        settings,
        gpus=len(NvidiaGpuResource.from_system()),
        cpus=int(CpuResource.from_system()),
        models_bytes=models_bytes,
    )
