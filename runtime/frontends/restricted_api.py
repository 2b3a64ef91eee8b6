"""Restricted API groups: tritonserver's `--http-restricted-api` and `--grpc-restricted-protocol`.

Each option value is `API[,API...]:KEY=VALUE`: calls to an endpoint of one of those groups are
served only when they carry the header KEY (HTTP) or the metadata key
`triton-grpc-protocol-KEY` (gRPC, where Triton prefixes the key) with exactly VALUE. Calls
without it are refused as Triton refuses them: HTTP 403 `{"error":"This API is restricted,
expecting header 'KEY'"}`, gRPC UNAVAILABLE "This protocol is restricted, expecting header
'triton-grpc-protocol-KEY'".

The tables below say which group every HTTP route and gRPC method belongs to; both frontends
read them, and the rules are parsed once at start. A frontend with no restriction installs no
check at all, so the unrestricted request path costs nothing.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from trident.runtime.errors import InvalidArgumentError


class ApiGroup(enum.Enum):
    """Triton's restricted API groups (the names its options accept)."""

    HEALTH = "health"
    METADATA = "metadata"
    INFERENCE = "inference"
    SHARED_MEMORY = "shared-memory"
    MODEL_CONFIG = "model-config"
    MODEL_REPOSITORY = "model-repository"
    STATISTICS = "statistics"
    TRACE = "trace"
    LOGGING = "logging"


#: What Triton puts before a --grpc-restricted-protocol key (gRPC metadata keys are lowercase).
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"

# --- which group each endpoint belongs to ----------------------------------------------------

_MODEL = r"/v2/models/[^/]+(?:/versions/[0-9]+)?"

#: HTTP routes (full matches on the raw, still percent-encoded path), tried in order; the
#: first that matches names the group. A path that matches none is not a route (404).
HTTP_ROUTE_GROUPS: tuple[tuple[re.Pattern[str], ApiGroup], ...] = tuple(
    (re.compile(pattern), group)
    for pattern, group in (
        # Inference first: it is the route a restricted server sees most.
        (_MODEL + r"/(?:infer|generate|generate_stream)", ApiGroup.INFERENCE),
        (r"/v2/health/(?:live|ready)", ApiGroup.HEALTH),
        (_MODEL + r"/ready", ApiGroup.HEALTH),
        (r"/v2", ApiGroup.METADATA),
        (r"/v2/models/stats", ApiGroup.STATISTICS),
        (_MODEL + r"/stats", ApiGroup.STATISTICS),
        (_MODEL, ApiGroup.METADATA),
        (_MODEL + r"/config", ApiGroup.MODEL_CONFIG),
        (r"/v2(?:/models/[^/]+)?/trace/setting", ApiGroup.TRACE),
        (r"/v2/logging", ApiGroup.LOGGING),
        (
            r"/v2/repository(?:/[^/]+)?/(?:index|models/[^/]+/(?:load|unload))",
            ApiGroup.MODEL_REPOSITORY,
        ),
        (
            r"/v2/(?:system|cuda)sharedmemory(?:/region/[^/]+)?/(?:status|register|unregister)",
            ApiGroup.SHARED_MEMORY,
        ),
        # OpenAI-compatible routes: listing models is a repository query (as in Triton's
        # OpenAI frontend); everything else under /v1 runs a model.
        (r"/v1/models(?:/.*)?", ApiGroup.MODEL_REPOSITORY),
        (r"/v1/.*", ApiGroup.INFERENCE),
    )
)

_INFERENCE_SERVICE = "/inference.GRPCInferenceService/"

#: gRPC methods (the HTTP/2 `:path`) and their groups.
GRPC_METHOD_GROUPS: Mapping[str, ApiGroup] = {
    **{
        _INFERENCE_SERVICE + method: group
        for method, group in (
            ("ServerLive", ApiGroup.HEALTH),
            ("ServerReady", ApiGroup.HEALTH),
            ("ModelReady", ApiGroup.HEALTH),
            ("ServerMetadata", ApiGroup.METADATA),
            ("ModelMetadata", ApiGroup.METADATA),
            ("ModelInfer", ApiGroup.INFERENCE),
            ("ModelStreamInfer", ApiGroup.INFERENCE),
            ("ModelConfig", ApiGroup.MODEL_CONFIG),
            ("ModelStatistics", ApiGroup.STATISTICS),
            ("RepositoryIndex", ApiGroup.MODEL_REPOSITORY),
            ("RepositoryModelLoad", ApiGroup.MODEL_REPOSITORY),
            ("RepositoryModelUnload", ApiGroup.MODEL_REPOSITORY),
            ("SystemSharedMemoryStatus", ApiGroup.SHARED_MEMORY),
            ("SystemSharedMemoryRegister", ApiGroup.SHARED_MEMORY),
            ("SystemSharedMemoryUnregister", ApiGroup.SHARED_MEMORY),
            ("CudaSharedMemoryStatus", ApiGroup.SHARED_MEMORY),
            ("CudaSharedMemoryRegister", ApiGroup.SHARED_MEMORY),
            ("CudaSharedMemoryUnregister", ApiGroup.SHARED_MEMORY),
            ("TraceSetting", ApiGroup.TRACE),
            ("LogSettings", ApiGroup.LOGGING),
        )
    },
    "/grpc.health.v1.Health/Check": ApiGroup.HEALTH,
}


def http_api_group(path: str) -> ApiGroup | None:
    """The group of an HTTP route given its raw path; None when no route has that path."""
    for pattern, group in HTTP_ROUTE_GROUPS:
        if pattern.fullmatch(path):
            return group
    return None


# --- the rules -------------------------------------------------------------------------------

# RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# What a client can send as a header or ASCII metadata value (visible ASCII and space).
_VALUE = re.compile(r"[\x20-\x7e]+")


class RestrictedApiError(InvalidArgumentError):
    """A restricted-API option that cannot be used (bad syntax, unknown group, group twice)."""


@dataclass(frozen=True, slots=True)
class Restriction:
    """The header (or gRPC metadata key) a group's calls must carry, and its value."""

    header: str
    value: str

    def allows(self, sent: str | None) -> bool:
        """Whether a call that sent `sent` as the header's value may go on (compared in
        constant time; compare_digest takes str only when ASCII, as the value is by parsing)."""
        return sent is not None and sent.isascii() and hmac.compare_digest(sent, self.value)


@dataclass(frozen=True)
class RestrictedApis:
    """The restrictions of one frontend, by group; empty when nothing is restricted."""

    rules: Mapping[ApiGroup, Restriction]
    #: The refusal message's first words: "API" on HTTP, "protocol" on gRPC (as in Triton).
    feature: str = "API"
    _by_method: Mapping[str, Restriction] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # gRPC restrictions by method path: one dict lookup per call, no enum hashing.
        by_method = {
            method: self.rules[group]
            for method, group in GRPC_METHOD_GROUPS.items()
            if group in self.rules
        }
        object.__setattr__(self, "_by_method", by_method)

    @classmethod
    def parse(
        cls, options: Sequence[str], *, option: str, header_prefix: str = "", feature: str = "API"
    ) -> RestrictedApis:
        """Parse option values `API[,API...]:KEY=VALUE` (tritonserver's syntax and checks).

        `option` names the flag in error messages; `header_prefix` goes before each key
        (GRPC_HEADER_PREFIX for gRPC). Raises RestrictedApiError.
        """
        rules: dict[ApiGroup, Restriction] = {}
        for text in options:
            groups, restriction = _parse_one(text, option, header_prefix)
            for group in groups:
                if group in rules:
                    raise RestrictedApiError(
                        f"--{option}: restricted {feature.lower()} '{group.value}' can not be "
                        "specified in multiple config groups"
                    )
                rules[group] = restriction
        return cls(rules, feature)

    @classmethod
    def for_http(cls, options: Sequence[str]) -> RestrictedApis:
        """The rules of --http-restricted-api."""
        return cls.parse(options, option="http-restricted-api")

    @classmethod
    def for_grpc(cls, options: Sequence[str]) -> RestrictedApis:
        """The rules of --grpc-restricted-protocol (keys prefixed as Triton does)."""
        return cls.parse(
            options,
            option="grpc-restricted-protocol",
            header_prefix=GRPC_HEADER_PREFIX,
            feature="protocol",
        )

    def __bool__(self) -> bool:
        return bool(self.rules)

    def refusal(self, group: ApiGroup | None, sent: Mapping[str, str]) -> str | None:
        """The message to refuse a call of `group` with, given the headers it sent (a mapping
        whose lookups match the frontend's header case rules); None when it may go on."""
        if group is None:
            return None
        restriction = self.rules.get(group)
        if restriction is None or restriction.allows(sent.get(restriction.header)):
            return None
        return f"This {self.feature} is restricted, expecting header '{restriction.header}'"

    def grpc_refusal(self, method: str, metadata: Iterable[tuple[str, str]]) -> str | None:
        """`refusal` for a gRPC call: `method` is its `:path`, `metadata` its headers."""
        restriction = self._by_method.get(method)
        if restriction is None:
            return None
        header = restriction.header
        for key, value in metadata:
            if key == header:  # the first value of the key counts, as in a header lookup
                if restriction.allows(value):
                    return None
                break
        return f"This {self.feature} is restricted, expecting header '{restriction.header}'"


def _parse_one(text: str, option: str, header_prefix: str) -> tuple[list[ApiGroup], Restriction]:
    syntax = f"--{option} option format is '<api>[,<api>...]:<key>=<value>', got '{text}'"
    groups_text, colon, setting = text.partition(":")
    key, equals, value = setting.partition("=")
    if not colon or not equals or not groups_text or not key or not value:
        raise RestrictedApiError(syntax)
    groups: list[ApiGroup] = []
    known = ", ".join(group.value for group in ApiGroup)
    for name in groups_text.split(","):
        try:
            groups.append(ApiGroup(name.strip()))
        except ValueError:
            raise RestrictedApiError(
                f"--{option}: unknown API group '{name.strip()}' (known: {known})"
            ) from None
    header = header_prefix + key
    if header_prefix:
        header = header.lower()  # gRPC metadata keys travel in lowercase
    if not _TOKEN.fullmatch(key):
        raise RestrictedApiError(f"--{option}: '{key}' is not a valid header name")
    if header_prefix and header.endswith("-bin"):
        raise RestrictedApiError(f"--{option}: binary metadata keys ('-bin') cannot be used")
    if not _VALUE.fullmatch(value):
        raise RestrictedApiError(
            f"--{option}: the value for '{key}' must be printable ASCII, as clients send it"
        )
    return groups, Restriction(header, value)
