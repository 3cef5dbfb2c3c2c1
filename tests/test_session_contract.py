"""InferenceSession control flow: the seed contract, on small fake backends.

The same behaviours run on a real espnet2 model in test_session_espnet.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from espnet_serve import InferenceSession
from espnet_serve.bundle.errors import InferenceConfigError
from tests.fakes import RecordingBackend, SlotErrorBackend, TwoInputBackend


def record_output_fn(calls: list[dict[str, Any]]):
    def output_fn(*, data, model_output, idx):
        calls.append({"data": data, "model_output": model_output, "idx": idx})
        if isinstance(idx, list):
            return [f"{i}={o}" for i, o in zip(idx, model_output, strict=True)]
        return f"{idx}={model_output}"

    return output_fn


def test_output_fn_and_output_fn_path_together_is_rejected():
    with pytest.raises(ValueError, match="only one of output_fn_path or output_fn"):
        InferenceSession(RecordingBackend(), output_fn_path="json.dumps", output_fn=print)


def test_output_fn_path_is_imported():
    session = InferenceSession(RecordingBackend(), output_fn_path="tests.fakes.RecordingBackend")
    assert session.output_fn is RecordingBackend


def test_forward_scalar_sample_and_call_alias():
    backend = RecordingBackend()
    session = InferenceSession(backend)
    assert session.forward("a") == "out:a"
    assert session("b") == "out:b"
    assert backend.calls == [{"speech": "a"}, {"speech": "b"}]


def test_forward_mapping_sample_uses_input_key():
    backend = RecordingBackend()
    session = InferenceSession(backend, input_key="audio")
    assert session({"audio": "x", "other": 1}) == "out:x"
    assert backend.calls == [{"audio": "x"}]


def test_forward_missing_input_key_names_it():
    session = InferenceSession(RecordingBackend(), input_key="audio")
    with pytest.raises(KeyError, match="'audio'"):
        session({"speech": "x"})


def test_scalar_sample_with_several_input_keys_is_rejected():
    session = InferenceSession(TwoInputBackend(), input_key=["speech", "text"])
    with pytest.raises(RuntimeError, match="several inputs"):
        session("x")
    with pytest.raises(RuntimeError):
        _ = session.primary_input_key
    assert session({"speech": "s", "text": "t"}) == "s|t"


def test_primary_input_key_of_one_element_list():
    assert InferenceSession(RecordingBackend(), input_key=["speech"]).primary_input_key == "speech"


def test_output_fn_single_call_contract():
    calls: list[dict[str, Any]] = []
    session = InferenceSession(RecordingBackend(), output_fn=record_output_fn(calls))
    assert session("a", idx="utt1") == "utt1=out:a"
    assert calls == [{"data": {"speech": "a"}, "model_output": "out:a", "idx": "utt1"}]


def test_forward_batch_model_batch_makes_one_call_and_output_fn_gets_lists():
    calls: list[dict[str, Any]] = []
    backend = RecordingBackend(batchable=True)
    session = InferenceSession(backend, output_fn=record_output_fn(calls), prefer_model_batch=True)
    assert session.forward_batch(["a", "b"], indices=["u1", "u2"]) == ["u1=out:a", "u2=out:b"]
    assert backend.calls == [{"speech": ["a", "b"]}]
    assert calls == [
        {
            "data": [{"speech": "a"}, {"speech": "b"}],
            "model_output": ["out:a", "out:b"],
            "idx": ["u1", "u2"],
        }
    ]


def test_forward_batch_mapping_samples_are_batched_per_key():
    session = InferenceSession(TwoInputBackend(), input_key=["speech", "text"])
    samples = [{"speech": "s1", "text": "t1"}, {"speech": "s2", "text": "t2"}]
    assert session.forward_batch(samples, use_model_batch=True) == ["s1|t1", "s2|t2"]


def test_forward_batch_without_model_batch_runs_per_sample():
    backend = RecordingBackend(batchable=True)
    session = InferenceSession(backend)
    assert session.forward_batch(["a", "b"]) == ["out:a", "out:b"]
    assert backend.calls == [{"speech": "a"}, {"speech": "b"}]


def test_forward_batch_falls_back_per_sample_when_backend_rejects_lists():
    calls: list[dict[str, Any]] = []
    backend = RecordingBackend(batchable=False)
    session = InferenceSession(backend, output_fn=record_output_fn(calls), prefer_model_batch=True)
    assert session.forward_batch(["a", "b"], indices=[7, 8]) == ["7=out:a", "8=out:b"]
    assert backend.calls == [{"speech": ["a", "b"]}, {"speech": "a"}, {"speech": "b"}]
    assert [c["idx"] for c in calls] == [7, 8]


def test_forward_batch_fallback_disabled_raises_runtime_error():
    session = InferenceSession(RecordingBackend(batchable=False), prefer_model_batch=True)
    with pytest.raises(RuntimeError, match="Batched inference failed"):
        session.forward_batch(["a", "b"], fallback_to_single_on_error=False)
    disabled = InferenceSession(
        RecordingBackend(), prefer_model_batch=True, fallback_to_single_on_batch_error=False
    )
    with pytest.raises(RuntimeError, match="one sample per call"):
        disabled.forward_batch(["a"])


def test_forward_batch_wrong_output_count():
    def drop_last(*, data, model_output, idx):
        return model_output[:-1] if isinstance(idx, list) else model_output

    backend = RecordingBackend(batchable=True)
    session = InferenceSession(backend, output_fn=drop_last, prefer_model_batch=True)
    with pytest.raises(RuntimeError, match="expected 3, got 2"):
        session.forward_batch(["a", "b", "c"], fallback_to_single_on_error=False)
    # With fallback, the per-sample path gives the right count.
    assert session.forward_batch(["a", "b", "c"]) == ["out:a", "out:b", "out:c"]


def test_forward_batch_non_list_result_counts_as_one_output():
    def summarise(*, data, model_output, idx):
        return "summary"

    session = InferenceSession(RecordingBackend(batchable=True), output_fn=summarise)
    assert session.forward_batch(["a"], use_model_batch=True) == ["summary"]
    with pytest.raises(RuntimeError, match="expected 2, got 1"):
        session.forward_batch(["a", "b"], use_model_batch=True, fallback_to_single_on_error=False)


def test_forward_batch_indices_length_mismatch():
    session = InferenceSession(RecordingBackend())
    with pytest.raises(ValueError, match="indices has 1 items but samples has 2"):
        session.forward_batch(["a", "b"], indices=[0])


@pytest.mark.parametrize("use_model_batch", [True, False])
def test_forward_batch_empty_batch(use_model_batch: bool):
    session = InferenceSession(RecordingBackend())
    with pytest.raises(ValueError, match="at least one sample"):
        session.forward_batch([], use_model_batch=use_model_batch)


def test_forward_batch_return_exceptions_keeps_other_samples():
    def fail_on_bad(*, data, model_output, idx):
        if data["speech"] == "bad":
            raise ValueError("bad sample")
        return model_output

    session = InferenceSession(RecordingBackend(), output_fn=fail_on_bad)
    results = session.forward_batch(["a", "bad", "c"], return_exceptions=True)
    assert results[0] == "out:a" and results[2] == "out:c"
    assert isinstance(results[1], ValueError)
    with pytest.raises(ValueError, match="bad sample"):
        session.forward_batch(["a", "bad"])


def test_model_batch_slot_errors_skip_output_fn_and_stay_in_place():
    calls: list[dict[str, Any]] = []
    session = InferenceSession(
        SlotErrorBackend(), output_fn=record_output_fn(calls), prefer_model_batch=True
    )
    results = session.forward_batch(
        ["a", "bad", "c"], indices=["u1", "u2", "u3"], return_exceptions=True
    )
    assert results[0] == "u1=out:a" and results[2] == "u3=out:c"
    assert isinstance(results[1], ValueError) and "'bad'" in str(results[1])
    assert calls == [
        {
            "data": [{"speech": "a"}, {"speech": "c"}],
            "model_output": ["out:a", "out:c"],
            "idx": ["u1", "u3"],
        }
    ]


def test_model_batch_slot_error_is_raised_without_return_exceptions():
    calls: list[dict[str, Any]] = []
    session = InferenceSession(
        SlotErrorBackend(), output_fn=record_output_fn(calls), prefer_model_batch=True
    )
    with pytest.raises(ValueError, match="cannot decode 'bad'"):
        session.forward_batch(["a", "bad"])
    all_failed = session.forward_batch(["bad", "bad"], return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in all_failed)
    assert calls == [{"data": [{"speech": "a"}], "model_output": ["out:a"], "idx": [0]}]


def test_get_model_unwraps_known_attributes():
    class Inner:
        pass

    class Wrapper:
        def __init__(self):
            self.asr_model = Inner()

    session = InferenceSession(Wrapper())
    assert isinstance(session.get_model(), Inner)
    assert isinstance(session.get_model(unwrap=False), Wrapper)


def test_from_config_device_resolution():
    auto = InferenceSession.from_config({"model": {"_target_": "tests.fakes.RecordingBackend"}})
    assert auto.model.device == "cpu"  # no CUDA on this machine
    explicit = InferenceSession.from_config(
        {"model": {"_target_": "tests.fakes.RecordingBackend", "device": "cuda:3"}}
    )
    assert explicit.model.device == "cuda:3"
    marked_auto = InferenceSession.from_config(
        {"model": {"_target_": "tests.fakes.RecordingBackend", "device": "auto"}}
    )
    assert marked_auto.model.device == "cpu"
    no_device = InferenceSession.from_config(
        {"model": {"_target_": "tests.fakes.NoDeviceBackend", "size": 3}}
    )
    assert no_device.model.size == 3


def test_from_config_input_key_output_fn_and_nested_mappings_are_plain():
    session = InferenceSession.from_config(
        {
            "input_key": ["speech"],
            "output_fn": "tests.test_session_contract.upper_output_fn",
            "model": {"_target_": "tests.fakes.RecordingBackend", "nested": {"a": [1, 2]}},
        }
    )
    assert session.primary_input_key == "speech"
    assert type(session.model.options["nested"]) is dict
    assert session("x") == "OUT:X"


def upper_output_fn(*, data, model_output, idx):
    return model_output.upper()


def test_from_config_without_model_target():
    with pytest.raises(InferenceConfigError, match="'model' mapping with a '_target_'"):
        InferenceSession.from_config({"input_key": "speech"})
