"""`TritonError` and `TritonModelException` as Triton's Python backend defines them, and the
mapping between their error codes and Trident's error hierarchy."""

from __future__ import annotations

from trident.runtime.errors import (
    AlreadyExistsError,
    CancelledError,
    InvalidArgumentError,
    ModelExecutionError,
    NotFoundError,
    TridentError,
    UnavailableError,
    UnsupportedError,
)


class TritonError:
    """An error a model attaches to a response: `TritonError(message, code=TritonError.INTERNAL)`.

    The code decides the status the client sees (INVALID_ARG -> HTTP 400 / gRPC INVALID_ARGUMENT).
    """

    # TRITONSERVER_Error_Code values.
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    __slots__ = ("_code", "_message")

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        if message is None:
            raise TypeError("TritonError needs a message")
        if code not in _CODE_NAMES:
            raise ValueError(f"unknown TritonError code {code!r}")
        self._message = str(message)
        self._code = int(code)

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __str__(self) -> str:
        return self._message

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, code=TritonError.{_CODE_NAMES[self._code]})"


class TritonModelException(Exception):
    """Raise from initialize/execute/finalize to fail with a message."""

    def message(self) -> str:
        return str(self)


_CODE_NAMES = {
    TritonError.UNKNOWN: "UNKNOWN",
    TritonError.INTERNAL: "INTERNAL",
    TritonError.NOT_FOUND: "NOT_FOUND",
    TritonError.INVALID_ARG: "INVALID_ARG",
    TritonError.UNAVAILABLE: "UNAVAILABLE",
    TritonError.UNSUPPORTED: "UNSUPPORTED",
    TritonError.ALREADY_EXISTS: "ALREADY_EXISTS",
    TritonError.CANCELLED: "CANCELLED",
}

_ERROR_CLASS_BY_CODE: dict[int, type[TridentError]] = {
    TritonError.NOT_FOUND: NotFoundError,
    TritonError.INVALID_ARG: InvalidArgumentError,
    TritonError.UNAVAILABLE: UnavailableError,
    TritonError.UNSUPPORTED: UnsupportedError,
    TritonError.ALREADY_EXISTS: AlreadyExistsError,
    TritonError.CANCELLED: CancelledError,
}

_CODE_BY_GRPC_NAME = {
    "UNKNOWN": TritonError.UNKNOWN,
    "NOT_FOUND": TritonError.NOT_FOUND,
    "INVALID_ARGUMENT": TritonError.INVALID_ARG,
    "UNAVAILABLE": TritonError.UNAVAILABLE,
    "UNIMPLEMENTED": TritonError.UNSUPPORTED,
    "ALREADY_EXISTS": TritonError.ALREADY_EXISTS,
    "CANCELLED": TritonError.CANCELLED,
}


def to_trident_error(error: TritonError) -> TridentError:
    """The error a client sees for a response a model marked with `error`."""
    cls = _ERROR_CLASS_BY_CODE.get(error.code())
    if cls is None:
        converted: TridentError = ModelExecutionError(error.message())
        if error.code() == TritonError.UNKNOWN:
            converted.grpc_code = "UNKNOWN"
        return converted
    converted = cls(error.message())
    if cls is not CancelledError:
        # The model produced it, so metrics count it as a backend failure whatever its code.
        converted.failure_reason = ModelExecutionError.failure_reason
    return converted


def from_trident_error(error: TridentError) -> TritonError:
    """The TritonError a BLS caller sees for a request the server failed."""
    return TritonError(error.message, _CODE_BY_GRPC_NAME.get(error.grpc_code, TritonError.INTERNAL))
