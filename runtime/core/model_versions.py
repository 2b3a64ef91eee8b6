"""The one parser for a model version a client names: an HTTP path's `/versions/<v>` segment,
a gRPC request's `version` / `model_version` field.

Internally a version is an int and 0 means "not given": the model's version policy chooses (the
highest ready version), as Triton's -1 does. The rules, written down in docs/protocol.md:

- "" (the field left empty) is 0;
- otherwise an optional sign and ASCII digits, within a signed 64-bit integer (Triton parses with
  `std::stol`); anything else is INVALID_ARGUMENT with Triton's message;
- a negative number is 0 as well. Triton refuses it; Trident takes it as "latest" because -1 is
  how Triton's own APIs (the C API, the Python backend's BLS `model_version=-1`) say "latest".
"""

from __future__ import annotations

import re

from trident.runtime.errors import InvalidArgumentError

#: Version meaning "not given: let the version policy choose".
LATEST_VERSION = 0

_INT64_MAX = 2**63 - 1
_NUMBER = re.compile(r"[+-]?[0-9]{1,19}")
#: At most this much of a bad version string is quoted back in the error message.
_ECHO_LIMIT = 64


def parse_model_version(text: str) -> int:
    """The version `text` names; `LATEST_VERSION` (0) for "" or a negative number.

    Raises InvalidArgumentError, worded as Triton words it, for anything that is not a signed
    64-bit decimal integer.
    """
    if not text:
        return LATEST_VERSION
    if _NUMBER.fullmatch(text) is None:
        raise _bad_version(text)
    number = int(text)
    if number > _INT64_MAX or number < -_INT64_MAX - 1:
        raise _bad_version(text)
    return max(number, LATEST_VERSION)


def _bad_version(text: str) -> InvalidArgumentError:
    shown = text if len(text) <= _ECHO_LIMIT else text[:_ECHO_LIMIT] + "..."
    return InvalidArgumentError(
        f"failed to get model version from specified version string '{shown}', version should "
        "be an integral value > 0"
    )
