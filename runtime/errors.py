"""Trident's error hierarchy.

Every error the core raises knows how each frontend reports it: an HTTP status, a gRPC status code
(by name, so this module does not import grpc) and, for requests that reached a scheduler, the
`reason` label of `nv_inference_request_failure`. Frontends map errors in one place.
"""

from __future__ import annotations

from enum import StrEnum


class FailureReason(StrEnum):
    """The `reason` label of nv_inference_request_failure (Triton's values)."""

    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    BACKEND = "BACKEND"
    OTHER = "OTHER"


class TridentError(Exception):
    """Base class: an error with a message meant for the client."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"
    #: `reason` label of nv_inference_request_failure when a scheduled request fails this way.
    failure_reason: FailureReason = FailureReason.OTHER

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(TridentError):
    """The request is malformed or does not match the model (bad shape, datatype, JSON...)."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFoundError(TridentError):
    """Unknown model, version, shared-memory region, or route."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class UnavailableError(TridentError):
    """The target exists but cannot serve now (not ready, queue full, server shutting down)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    failure_reason = FailureReason.REJECTED


class UnsupportedError(TridentError):
    """The feature is not available for this model or in this server set-up."""

    http_status = 501
    grpc_code = "UNIMPLEMENTED"


class AlreadyExistsError(TridentError):
    """A resource with that name exists already (shared-memory region)."""

    http_status = 400
    grpc_code = "ALREADY_EXISTS"


class CancelledError(TridentError):
    """The client cancelled the request, or dropped its connection."""

    http_status = 400
    grpc_code = "CANCELLED"
    failure_reason = FailureReason.CANCELED


class PermissionDeniedError(TridentError):
    """The server's configuration forbids the call (shared-memory registration with
    --allow-shared-memory=false). Restricted API groups answer as Triton does instead: see
    frontends/restricted_api.py."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class InternalError(TridentError):
    """The server or a model failed while handling an otherwise valid request."""

    http_status = 500
    grpc_code = "INTERNAL"


class ModelExecutionError(InternalError):
    """A model's own code raised or returned an error for a request."""

    failure_reason = FailureReason.BACKEND


class ModelLoadError(TridentError):
    """A model could not be loaded; the message says why and, where possible, what to fix."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
