"""--grpc-restricted-protocol on grpc.aio: a server interceptor that refuses restricted calls.

The native server checks the same rules where it opens a stream (native/server.py); both
answer UNAVAILABLE "This protocol is restricted, expecting header '...'", as Triton does. The
interceptor is installed only when something is restricted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ..restricted_api import RestrictedApis


class RestrictedApiInterceptor(grpc.aio.ServerInterceptor):
    """Swaps the handler of a call that lacks its group's header for one that refuses it."""

    def __init__(self, restrictions: RestrictedApis) -> None:
        self._restrictions = restrictions

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: grpc answers UNIMPLEMENTED
        metadata = handler_call_details.invocation_metadata or ()  # type: ignore[attr-defined]
        refusal = self._restrictions.grpc_refusal(
            handler_call_details.method,  # type: ignore[attr-defined]
            ((item.key, item.value) for item in metadata),
        )
        if refusal is None:
            return handler
        return _refusing(handler, refusal)


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that aborts with UNAVAILABLE `message`."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(  # type: ignore[no-any-return,operator]
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
