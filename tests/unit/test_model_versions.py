"""The one model-version parser both frontends use (runtime/core/model_versions.py)."""

from __future__ import annotations

import pytest

from trident.runtime.core.model_versions import LATEST_VERSION, parse_model_version
from trident.runtime.errors import InvalidArgumentError


def test_an_empty_version_means_latest() -> None:
    assert parse_model_version("") == LATEST_VERSION == 0


@pytest.mark.parametrize(
    ("text", "version"),
    [("1", 1), ("12", 12), ("007", 7), ("+3", 3), ("9223372036854775807", 2**63 - 1)],
)
def test_decimal_numbers_are_versions(text: str, version: int) -> None:
    assert parse_model_version(text) == version


@pytest.mark.parametrize("text", ["-1", "-42", "0", "-9223372036854775808"])
def test_zero_and_negative_numbers_mean_latest(text: str) -> None:
    assert parse_model_version(text) == LATEST_VERSION


@pytest.mark.parametrize(
    "text",
    [
        "latest",
        "1.0",
        " 1",
        "1 ",
        "1_000",
        "0x10",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: int() would take it, Triton's std::stol does not
        "+",
        "-",
        "9223372036854775808",  # one past int64
        "99999999999999999999999",
    ],
)
def test_anything_else_is_refused_with_tritons_message(text: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_model_version(text)
    assert info.value.message == (
        f"failed to get model version from specified version string '{text}', version should "
        "be an integral value > 0"
    )
    assert info.value.http_status == 400 and info.value.grpc_code == "INVALID_ARGUMENT"


def test_a_long_bad_version_is_quoted_only_in_part() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_model_version("x" * 100_000)
    assert len(info.value.message) < 200
    assert "'" + "x" * 64 + "...'" in info.value.message
