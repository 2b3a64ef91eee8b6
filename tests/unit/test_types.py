import numpy as np
import pytest

from trident.runtime.errors import InvalidArgumentError
from trident.runtime.types import (
    datatype_of_array,
    deserialize_bytes_tensor,
    serialize_bytes_tensor,
)


def test_bytes_round_trip():
    array = np.array([b"a", b"", "h\u00e9".encode(), b"\x00\x01"], dtype=np.object_)
    wire = serialize_bytes_tensor(array)
    assert wire[:4] == (1).to_bytes(4, "little")
    assert list(deserialize_bytes_tensor(wire, 4)) == list(array)


@pytest.mark.parametrize(
    ("wire", "count", "message"),
    [
        ((10).to_bytes(4, "little") + b"abc", 1, "declares 10 bytes"),
        ((1).to_bytes(4, "little") + b"a", 2, "needs at least 8 bytes"),
        ((1).to_bytes(4, "little") + b"abcd", 2, "starts past the end"),
        ((1).to_bytes(4, "little") + b"ab", 1, "left over"),
        (b"\x01\x00", 1, "needs at least 4 bytes"),
    ],
)
def test_bytes_lengths_are_checked(wire, count, message):
    with pytest.raises(InvalidArgumentError, match=message):
        deserialize_bytes_tensor(wire, count)


def test_datatype_of_array():
    assert datatype_of_array(np.zeros(1, np.float16)) == "FP16"
    assert datatype_of_array(np.array([b"x"], dtype=np.object_)) == "BYTES"
    assert datatype_of_array(np.array(["x"])) == "BYTES"
    assert datatype_of_array(np.zeros(1, bool)) == "BOOL"
