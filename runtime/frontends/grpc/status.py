"""TridentError -> gRPC status: the one place the gRPC frontend maps errors."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from trident.runtime.errors import InternalError, TridentError

logger = logging.getLogger("trident.frontends.grpc")

#: TridentError.grpc_code (a StatusCode name) -> the StatusCode itself.
_STATUS = {code.name: code for code in grpc.StatusCode}


def status_code(error: TridentError) -> grpc.StatusCode:
    return _STATUS.get(error.grpc_code, grpc.StatusCode.INTERNAL)


async def abort(context: grpc.aio.ServicerContext, error: TridentError) -> NoReturn:
    """End the call with the error's status code and message."""
    await context.abort(status_code(error), error.message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def unexpected(method: str, exc: Exception) -> InternalError:
    """A bug, not a client error: log the traceback, report INTERNAL with a short message."""
    logger.exception("gRPC %s failed unexpectedly", method)
    return InternalError(f"{method} failed: {type(exc).__name__}: {exc}")
