"""The classification extension's strings, as Triton writes them for each datatype."""

from __future__ import annotations

import numpy as np
import pytest

from trident.runtime.core.outputs import classify
from trident.runtime.errors import InvalidArgumentError
from trident.runtime.types import Tensor


def _strings(tensor: Tensor) -> list:
    return [v.decode() for v in np.asarray(tensor.data).reshape(-1)]


def test_int64_values_print_exactly_and_sort_without_rounding():
    data = np.array([2**62, 2**62 + 1, -(2**63)], dtype=np.int64)
    result = classify(Tensor("o", "INT64", (3,), data), 3, None, batched=False)
    assert _strings(result) == [
        "4611686018427387905:1",
        "4611686018427387904:0",
        "-9223372036854775808:2",
    ]


def test_unsigned_values_sort_as_unsigned():
    data = np.array([[1, 255, 128]], dtype=np.uint8)
    result = classify(Tensor("o", "UINT8", (1, 3), data), 2, ["a", "b"], batched=True)
    assert result.shape == (1, 2)
    assert _strings(result) == ["255:1:b", "128:2"]


def test_floats_print_with_six_decimals_and_ties_keep_index_order():
    data = np.array([0.5, 0.25, 0.5, 1e-7], dtype=np.float32)
    result = classify(Tensor("o", "FP32", (4,), data), 4, None, batched=False)
    assert _strings(result) == ["0.500000:0", "0.500000:2", "0.250000:1", "0.000000:3"]


def test_bf16_words_print_as_their_float_values():
    words = (np.array([1.5, 2.25], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    result = classify(Tensor("o", "BF16", (2,), words), 2, None, batched=False)
    assert _strings(result) == ["2.250000:1", "1.500000:0"]


@pytest.mark.parametrize("datatype", ["BOOL", "BYTES"])
def test_types_triton_cannot_classify_are_refused(datatype):
    data = np.array([True, False]) if datatype == "BOOL" else np.array([b"a"], dtype=object)
    with pytest.raises(InvalidArgumentError, match=f"unsupported type '{datatype}'"):
        classify(Tensor("o", datatype, data.shape, data), 1, None, batched=False)
