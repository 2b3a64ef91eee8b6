"""The parameter rules both codecs share (runtime/core/parameters.py), on plain values."""

from __future__ import annotations

import pytest

from trident.runtime.core.parameters import (
    apply_request_parameters,
    check_shared_memory_size,
    custom_value,
    input_parameters,
    requested_output,
)
from trident.runtime.errors import InvalidArgumentError
from trident.runtime.types import InferenceRequest, SharedMemoryRef

UINT64_MAX = 2**64 - 1


def _apply(parameters: dict[str, object], allowed: tuple[str, ...] = ()) -> InferenceRequest:
    request = InferenceRequest(model_name="m")
    apply_request_parameters(request, parameters, allowed)
    return request


# ------------------------------------------------------------------------ request parameters


def test_reserved_keys_set_request_fields_and_the_rest_reach_the_model() -> None:
    request = InferenceRequest(model_name="m")
    binary = apply_request_parameters(
        request,
        {
            "sequence_id": 7,
            "sequence_start": True,
            "sequence_end": False,
            "priority": 2,
            "timeout": 1500,
            "binary_data_output": True,
            "temperature": 0.5,
            "mode": "fast",
            "n": -3,
            "flag": False,
        },
    )
    assert binary is True
    assert (request.sequence_id, request.sequence_start, request.sequence_end) == (7, True, False)
    assert (request.priority, request.timeout_us) == (2, 1500)
    assert request.parameters == {"temperature": 0.5, "mode": "fast", "n": -3, "flag": False}


def test_binary_data_output_is_none_when_not_given() -> None:
    assert apply_request_parameters(InferenceRequest(model_name="m"), {"priority": 1}) is None


def test_a_string_sequence_id_stays_a_string() -> None:
    assert _apply({"sequence_id": "session-1"}).sequence_id == "session-1"


def test_the_widest_unsigned_values_are_accepted() -> None:
    request = _apply({"sequence_id": UINT64_MAX, "priority": UINT64_MAX, "timeout": 0})
    assert request.sequence_id == request.priority == UINT64_MAX and request.timeout_us == 0


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"sequence_id": True},
            "invalid value type for 'sequence_id' parameter, expected an integer or a string.",
        ),
        ({"sequence_id": 1.0}, "expected an integer or a string."),
        ({"sequence_id": -1}, "invalid value for 'sequence_id', expected value >= 0."),
        (
            {"sequence_start": 1},
            "invalid value type for 'sequence_start' parameter, expected a boolean.",
        ),
        ({"sequence_end": "true"}, "'sequence_end' parameter, expected a boolean."),
        ({"priority": "high"}, "invalid value type for 'priority' parameter, expected an integer."),
        ({"priority": True}, "'priority' parameter, expected an integer."),
        ({"priority": -1}, "invalid value for 'priority', expected value >= 0."),
        ({"timeout": 2.5}, "invalid value type for 'timeout' parameter, expected an integer."),
        (
            {"timeout": UINT64_MAX + 1},
            f"invalid value for 'timeout', expected value <= {UINT64_MAX}.",
        ),
        ({"binary_data_output": "yes"}, "'binary_data_output' parameter, expected a boolean."),
        (
            {"custom": {"nested": 1}},
            "parameter 'custom' has invalid type. It should be either 'int', 'bool', 'double' "
            "or 'string'.",
        ),
        ({"custom": None}, "parameter 'custom' has invalid type."),
        ({"custom": [1]}, "parameter 'custom' has invalid type."),
        ({"custom": 2**64}, "parameter 'custom' has invalid type."),
        ({"custom": -(2**63) - 1}, "parameter 'custom' has invalid type."),
    ],
)
def test_bad_request_parameters_are_refused_with_one_wording(parameters, message) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        _apply(parameters)
    assert message in info.value.message


def test_custom_integers_span_int64_and_uint64() -> None:
    assert custom_value("k", -(2**63)) == -(2**63)
    assert custom_value("k", UINT64_MAX) == UINT64_MAX


def test_triton_keys_are_refused_unless_the_frontend_reads_them() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        _apply({"triton_enable_empty_final_response": True})
    assert info.value.message == (
        "parameter keys starting with 'triton_' are reserved for Triton usage and should not be "
        "specified."
    )
    allowed = ("triton_enable_empty_final_response",)
    request = _apply({"triton_enable_empty_final_response": True}, allowed)
    assert request.parameters == {}  # read by the frontend, never by the model
    with pytest.raises(InvalidArgumentError, match=r"Only the following keys .* are allowed: "):
        _apply({"triton_other": True}, allowed)
    with pytest.raises(InvalidArgumentError, match="expected a boolean"):
        _apply({"triton_enable_empty_final_response": 1}, allowed)


# ------------------------------------------------------------------------ input parameters


def test_input_parameters_split_binary_size_shared_memory_and_the_rest() -> None:
    parsed = input_parameters(
        "IN",
        {
            "binary_data_size": 16,
            "shared_memory_region": "r",
            "shared_memory_byte_size": 64,
            "shared_memory_offset": 8,
            "note": "hi",
        },
    )
    assert parsed.binary_data_size == 16
    assert parsed.shared_memory == SharedMemoryRef("r", 64, 8)
    assert parsed.others == {"note": "hi"}


def test_no_parameters_means_no_binary_data_and_no_shared_memory() -> None:
    assert input_parameters("IN", {}) == (None, None, {})


def test_shared_memory_sizes_default_to_zero_and_need_a_region() -> None:
    # Triton's rule on both protocols: byte size and offset are 0 unless given, and are
    # ignored without a region.
    assert input_parameters("IN", {"shared_memory_region": "r"}).shared_memory == (
        SharedMemoryRef("r", 0, 0)
    )
    parsed = input_parameters("IN", {"shared_memory_byte_size": 4, "shared_memory_offset": 2})
    assert parsed.shared_memory is None and parsed.others == {}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"shared_memory_region": 3},
            "invalid value type for 'shared_memory_region' parameter of input 'IN', expected a "
            "string.",
        ),
        (
            {"shared_memory_region": "r", "shared_memory_byte_size": "4"},
            "'shared_memory_byte_size' parameter of input 'IN', expected an integer.",
        ),
        (
            {"shared_memory_region": "r", "shared_memory_offset": -1},
            "invalid value for 'shared_memory_offset' of input 'IN', expected value >= 0.",
        ),
        ({"binary_data_size": -4}, "invalid value for 'binary_data_size' of input 'IN'"),
        ({"binary_data_size": 4.0}, "'binary_data_size' parameter of input 'IN', expected an"),
        ({"note": {"a": 1}}, "parameter 'note' of input 'IN' has invalid type."),
    ],
)
def test_bad_input_parameters_are_refused(parameters, message) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        input_parameters("IN", parameters)
    assert message in info.value.message


# ------------------------------------------------------------------------ output parameters


def test_requested_output_reads_binary_classification_and_shared_memory() -> None:
    plain = requested_output("Y", {})
    assert (plain.binary, plain.classification, plain.shared_memory) == (None, 0, None)
    classified = requested_output("Y", {"binary_data": False, "classification": 3, "k": 1})
    assert (classified.binary, classified.classification) == (False, 3)
    assert classified.parameters == {"k": 1}
    in_shm = requested_output(
        "Y", {"shared_memory_region": "out", "shared_memory_byte_size": 64, "binary_data": False}
    )
    assert in_shm.shared_memory == SharedMemoryRef("out", 64, 0) and in_shm.parameters == {}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"shared_memory_region": "r", "classification": 2},
            "Output can't set both 'shared_memory_region' and 'classification'",
        ),
        (
            {"shared_memory_region": "r", "binary_data": True},
            "Output can't set both 'shared_memory_region' and 'binary_data'",
        ),
        ({"classification": -1}, "invalid value for 'classification' of output 'Y'"),
        ({"classification": True}, "'classification' parameter of output 'Y', expected an"),
        ({"binary_data": "true"}, "'binary_data' parameter of output 'Y', expected a boolean."),
    ],
)
def test_bad_output_parameters_are_refused(parameters, message) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        requested_output("Y", parameters)
    assert message in info.value.message


# ------------------------------------------------------------------------ shared-memory sizes


def test_a_fixed_size_shape_must_fill_the_region_exactly() -> None:
    check_shared_memory_size("IN", "FP32", (2, 2), 4, 4, 16)
    with pytest.raises(InvalidArgumentError) as info:
        check_shared_memory_size("IN", "FP32", (2**40,), 2**40, 4, 64)
    assert info.value.message == (
        f"input 'IN': shape [{2**40}] of FP32 needs {2**42} bytes but shared_memory_byte_size is 64"
    )


def test_bytes_elements_need_at_least_their_length_prefixes() -> None:
    check_shared_memory_size("S", "BYTES", (2,), 2, 0, 8)
    check_shared_memory_size("S", "BYTES", (2,), 2, 0, 100)
    with pytest.raises(
        InvalidArgumentError, match=r"\(3 BYTES elements\), which needs at least 12"
    ):
        check_shared_memory_size("S", "BYTES", (3,), 3, 0, 8)
