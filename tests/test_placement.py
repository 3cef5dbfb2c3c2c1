"""Where the models run (``serving/placement.py``): the settings and the machine decide.

The served shapes themselves are tested against real servers in ``test_service_load.py``
(the default on this CPU machine, the model services, the chart's split mode).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from espnet_serve.serving.placement import (
    SMALL_MODELS_MIB,
    Placement,
    describe,
    machine_placement,
    resolve_placement,
)
from espnet_serve.serving.settings import ServeSettings

SMALL = SMALL_MODELS_MIB * 2**20  # the limit itself is small
LARGE = SMALL + 1


def placement(*, gpus: int = 0, cpus: int = 4, size: int = 16 * 2**20, **settings) -> Placement:
    return resolve_placement(
        ServeSettings(**settings), gpus=gpus, cpus=cpus, models_bytes=lambda: size
    )


@pytest.mark.parametrize(
    ("machine", "settings", "expected"),
    [
        # No GPU, small models: in every API worker, one per CPU, one torch thread each.
        ({}, {}, (True, 4, 1)),
        ({"size": SMALL}, {}, (True, 4, 1)),
        ({"cpus": 1}, {}, (True, 1, 1)),
        ({"gpus": 2}, {"gpu_count": 0}, (True, 4, 1)),  # told to run on CPU
        ({"gpus": 0}, {"gpu_count": 1}, (True, 4, 1)),  # asked for a GPU, has none
        ({}, {"api_workers": 2}, (True, 2, 2)),  # the CPUs shared out
        ({}, {"api_workers": 8}, (True, 8, 1)),  # at least one thread
        ({}, {"model_threads": 3}, (True, 4, 3)),
        # A GPU to batch for, or models too large to copy: their own model services.
        ({"gpus": 1}, {"gpu_count": 1}, (False, 1, None)),
        ({"size": LARGE}, {}, (False, 1, None)),
        ({"size": LARGE}, {"model_threads": 2, "api_workers": 3}, (False, 3, 2)),
        # Said outright.
        ({"size": LARGE}, {"model_in_process": True}, (True, 4, 1)),
        ({}, {"model_in_process": False}, (False, 1, None)),
        ({"gpus": 1}, {"model_in_process": True, "api_workers": 1}, (True, 1, 4)),
    ],
)
def test_the_settings_and_the_machine_decide_where_the_models_run(machine, settings, expected):
    found = placement(**machine, **settings)
    assert (found.in_api_workers, found.api_workers, found.model_threads) == expected


def test_the_models_size_is_read_only_where_it_decides():
    def unreadable() -> int:
        raise AssertionError("the models' size was read")

    for settings, gpus in [({"model_in_process": False}, 0), ({}, 1)]:
        resolve_placement(ServeSettings(**settings), gpus=gpus, cpus=2, models_bytes=unreadable)


def test_the_log_line_says_where_and_why():
    assert describe(placement()) == (
        "Models in each API worker (auto: no GPU, the models take 16 MiB (up to 64)); "
        "4 API worker(s), model threads: 1."
    )
    assert describe(placement(size=100 * 2**20)) == (
        "Models in their model services (auto: the models take 100 MiB, over 64); "
        "1 API worker(s), model threads: torch's default."
    )


@pytest.mark.parametrize(
    ("env", "in_process", "workers"),
    [
        ({}, "auto", "auto"),
        (
            {"ESPNET_SERVE_MODEL_IN_PROCESS": "auto", "ESPNET_SERVE_API_WORKERS": "auto"},
            "auto",
            "auto",
        ),
        ({"ESPNET_SERVE_MODEL_IN_PROCESS": "1", "ESPNET_SERVE_API_WORKERS": "3"}, True, 3),
        ({"ESPNET_SERVE_MODEL_IN_PROCESS": "false"}, False, "auto"),
    ],
)
def test_the_environment_spells_auto_true_false_and_counts(monkeypatch, env, in_process, workers):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ServeSettings()
    assert (settings.model_in_process, settings.api_workers) == (in_process, workers)


@pytest.mark.parametrize(
    ("name", "value"),
    [("ESPNET_SERVE_MODEL_IN_PROCESS", "sometimes"), ("ESPNET_SERVE_API_WORKERS", "0")],
)
def test_anything_else_is_refused_naming_the_setting(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("ESPNET_SERVE_").lower()):
        ServeSettings()


def test_this_machine_without_a_gpu_puts_the_embedded_models_in_the_api_workers():
    from bentoml._internal.resource import CpuResource, NvidiaGpuResource

    if NvidiaGpuResource.from_system():
        pytest.skip("this machine has a GPU")
    found = machine_placement(ServeSettings(), lambda: 16 * 2**20)
    assert found.in_api_workers
    assert found.api_workers == max(1, int(CpuResource.from_system()))
