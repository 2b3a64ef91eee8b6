"""Server settings: one typed object, built by the CLI (runtime/cli.py) or by tests.

This module is the one table of settings. Each field carries its flag, its help text and how the
flag parses (`setting(...)` puts them in the field's metadata); `runtime/cli.py` builds the argument
parser from these fields and converts the parsed flags back into a `ServerSettings`, so a setting is
written once. Flag names follow tritonserver's (`--model-repository` -> `model_repositories`, ...).
`trident serve --help` prints every help text with its default.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from trident.backends.python.isolation.settings import DEFAULT_BUSY_POLL_US, checked_busy_poll_us
from trident.runtime.core.model_states import ControlMode


class FlagKind(enum.Enum):
    """How a flag is given on the command line."""

    #: `--flag VALUE`.
    VALUE = "value"
    #: tritonserver style booleans: `--flag`, `--flag=true`, `--flag=false`.
    BOOL = "bool"
    #: Repeatable: `--flag A --flag B` gives [A, B].
    APPEND = "append"


@dataclass(frozen=True)
class FlagSpec:
    """The command-line side of one setting."""

    flags: tuple[str, ...]
    help: str
    kind: FlagKind = FlagKind.VALUE
    #: Converts one command-line string; None keeps the string.
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


def setting(
    default: Any,
    flag: str | Sequence[str],
    help: str,
    *,
    kind: FlagKind = FlagKind.VALUE,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
) -> Any:
    """A settings field with its flag. Lists get a fresh default each time."""
    flags = (flag,) if isinstance(flag, str) else tuple(flag)
    spec = FlagSpec(
        flags, help, kind, parse, tuple(choices) if choices is not None else None, metavar
    )
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"flag": spec})
    return field(default=default, metadata={"flag": spec})


def flag_spec(name: str) -> FlagSpec:
    """The flag of the field `name` (KeyError when it has none)."""
    for item in fields(ServerSettings):
        if item.name == name:
            return item.metadata["flag"]  # type: ignore[no-any-return]
    raise KeyError(name)


def _control_mode(value: str) -> ControlMode:
    try:
        return ControlMode(value)
    except ValueError:
        modes = ", ".join(f"'{mode}'" for mode in ControlMode)
        raise ValueError(f"invalid choice: '{value}' (choose from {modes})") from None


def _trace_config(value: str) -> str:
    """One --trace-config value, checked by tritonserver's rules (trace_settings.py)."""
    from trident.runtime.observability.trace_settings import parse_trace_config

    parse_trace_config([value])
    return value


def _bytes(value: str) -> int:
    size = int(value)
    if size <= 0:
        raise ValueError(f"expected a positive number of bytes, got {value}")
    return size


def _busy_poll_us(value: str) -> int:
    return checked_busy_poll_us(int(value))


def _cache_config(value: str) -> str:
    """One --cache-config value, checked at once: a typo stops the command with a clear message."""
    from trident.runtime.core.response_cache import parse_cache_config

    parse_cache_config([value])
    return value


@dataclass
class ServerSettings:
    # --- repositories and models -------------------------------------------------------------
    model_repositories: list[Path] = setting(
        [],
        ("--model-repository", "--model-store"),
        "a model repository folder (MODEL/VERSION/model files, optional MODEL/config.pbtxt); "
        "repeat for several. Default: ./model_repository when it exists.",
        kind=FlagKind.APPEND,
        parse=Path,
        metavar="DIR",
    )
    model_control_mode: ControlMode = setting(
        ControlMode.NONE,
        "--model-control-mode",
        "none: load every model at start and never change; poll: also load, reload and unload "
        "models as the repository changes on disk; explicit: load only --load-model models at "
        "start, then load and unload through the repository API",
        choices=tuple(ControlMode),
        parse=_control_mode,
    )
    startup_models: list[str] = setting(
        [],
        "--load-model",
        "with --model-control-mode=explicit, a model to load at start; repeat for several, '*' "
        "loads all",
        kind=FlagKind.APPEND,
        metavar="NAME",
    )
    repository_poll_secs: float = setting(
        15.0, "--repository-poll-secs", "seconds between repository scans in poll mode", parse=float
    )
    strict_model_config: bool = setting(
        False,
        "--strict-model-config",
        "require complete config.pbtxt files instead of completing them from model files",
        kind=FlagKind.BOOL,
    )
    strict_readiness: bool = setting(
        True,
        "--strict-readiness",
        "report ready only when every model is ready; false: ready once the server is up",
        kind=FlagKind.BOOL,
    )
    cache_config: list[str] = setting(
        [],
        "--cache-config",
        "enable the response cache, e.g. --cache-config=local,size=1048576 (bytes); models use it "
        "when their config says response_cache { enable: true }. Default: no cache",
        kind=FlagKind.APPEND,
        parse=_cache_config,
        metavar="CACHE,KEY=VALUE",
    )
    exit_on_error: bool = setting(
        False,
        "--exit-on-error",
        "exit at start when any model fails to load (otherwise serve the others and report the "
        "failure in the repository index)",
        kind=FlagKind.BOOL,
    )
    exit_timeout_secs: float = setting(
        30.0,
        "--exit-timeout-secs",
        "seconds to wait for in-flight requests at shutdown",
        parse=float,
    )
    python_isolation: str = setting(
        "none",
        "--python-isolation",
        "where Python models run: none (in the server process) or process (each instance in a "
        "child process that is restarted when it dies; a model's config can also ask for it with "
        'parameters { key: "isolation" value: { string_value: "process" } })',
        choices=("none", "process"),
    )
    python_isolation_busy_poll_us: int = setting(
        DEFAULT_BUSY_POLL_US,
        "--python-isolation-busy-poll-us",
        "how long, in microseconds, the server polls for an isolated Python model's answer and "
        "the model's process polls for its next request before either sleeps: lower latency on "
        "virtual machines for up to that much CPU per request; 0 never polls (a model's config "
        'can set its own with parameters { key: "busy_poll_us" ... })',
        parse=_busy_poll_us,
    )

    # --- frontends ------------------------------------------------------------------------------
    http_port: int = setting(8000, "--http-port", "HTTP port; 0 picks a free one", parse=int)
    grpc_port: int = setting(8001, "--grpc-port", "gRPC port; 0 picks a free one", parse=int)
    metrics_port: int = setting(8002, "--metrics-port", "Prometheus metrics port", parse=int)
    http_address: str = setting(
        "0.0.0.0", "--http-address", "address the HTTP server binds (all interfaces by default)"
    )
    grpc_address: str = setting("0.0.0.0", "--grpc-address", "address the gRPC server binds")
    metrics_address: str = setting(
        "0.0.0.0", "--metrics-address", "address the metrics server binds"
    )
    allow_http: bool = setting(
        True, "--allow-http", "serve the HTTP/REST protocol", kind=FlagKind.BOOL
    )
    allow_grpc: bool = setting(True, "--allow-grpc", "serve the gRPC protocol", kind=FlagKind.BOOL)
    allow_metrics: bool = setting(
        True, "--allow-metrics", "serve Prometheus metrics", kind=FlagKind.BOOL
    )
    grpc_implementation: str = setting(
        "native",
        "--grpc-implementation",
        "the gRPC server: native (Trident's own HTTP/2 server on asyncio, fast) or grpcio "
        "(grpc.aio); both serve the same services",
        choices=("native", "grpcio"),
    )

    # --- request limits -------------------------------------------------------------------------
    http_max_input_size: int = setting(
        64 * 1024 * 1024,
        "--http-max-input-size",
        "largest HTTP request body accepted, in bytes",
        parse=_bytes,
        metavar="BYTES",
    )
    http_max_json_depth: int = setting(
        64,
        "--http-max-json-depth",
        "deepest nesting of arrays and objects accepted in a JSON request body",
        parse=int,
    )
    model_load_max_files: int = setting(
        1024,
        "--model-load-max-files",
        "most model files one load request may send (`file:` parameters); their total size is "
        "bounded by --http-max-input-size on both protocols",
        parse=int,
    )
    grpc_max_receive_message_size: int = setting(
        64 * 1024 * 1024,
        "--grpc-max-receive-message-size",
        "largest gRPC request message accepted, in bytes, after decompression",
        parse=_bytes,
        metavar="BYTES",
    )
    grpc_max_concurrent_streams: int = setting(
        1024,
        "--grpc-max-concurrent-streams",
        "concurrent gRPC calls per connection (advertised in SETTINGS; more are refused)",
        parse=int,
    )
    grpc_max_header_list_size: int = setting(
        16 * 1024,
        "--grpc-max-header-list-size",
        "largest header block of one gRPC call, in bytes, counted across CONTINUATION frames",
        parse=_bytes,
        metavar="BYTES",
    )
    grpc_max_resets_per_second: int = setting(
        200,
        "--grpc-max-resets-per-second",
        "streams a client may reset per second, averaged over a few seconds, before its "
        "connection is closed with GOAWAY ENHANCE_YOUR_CALM (rapid-reset protection)",
        parse=int,
    )
    grpc_max_pending_control_frames: int = setting(
        1000,
        "--grpc-max-pending-control-frames",
        "PING and SETTINGS acknowledgements owed to a client that does not read before its "
        "connection is closed",
        parse=int,
    )
    grpc_max_write_buffer_size: int = setting(
        4 * 1024 * 1024,
        "--grpc-max-write-buffer-size",
        "unsent response bytes per connection above which the server stops reading from it "
        "until the client catches up",
        parse=_bytes,
        metavar="BYTES",
    )

    # --- TLS and access -------------------------------------------------------------------------
    grpc_use_ssl: bool = setting(
        False,
        "--grpc-use-ssl",
        "serve gRPC over TLS (needs the server cert and key)",
        kind=FlagKind.BOOL,
    )
    grpc_use_ssl_mutual: bool = setting(
        False,
        "--grpc-use-ssl-mutual",
        "gRPC over mutual TLS (turns TLS on): clients must present a certificate signed by "
        "--grpc-root-cert",
        kind=FlagKind.BOOL,
    )
    grpc_server_cert: str = setting(
        "", "--grpc-server-cert", "PEM file of the gRPC server certificate", metavar="FILE"
    )
    grpc_server_key: str = setting(
        "", "--grpc-server-key", "PEM file of the gRPC server private key", metavar="FILE"
    )
    grpc_root_cert: str = setting(
        "",
        "--grpc-root-cert",
        "PEM file of the CA that signs client certificates (mutual TLS)",
        metavar="FILE",
    )
    http_use_ssl: bool = setting(
        False,
        "--http-use-ssl",
        "serve HTTP over TLS (HTTPS; needs the server cert and key)",
        kind=FlagKind.BOOL,
    )
    http_use_ssl_mutual: bool = setting(
        False,
        "--http-use-ssl-mutual",
        "HTTPS with mutual TLS (turns TLS on): clients must present a certificate signed by "
        "--http-root-cert",
        kind=FlagKind.BOOL,
    )
    http_server_cert: str = setting(
        "", "--http-server-cert", "PEM file of the HTTPS server certificate", metavar="FILE"
    )
    http_server_key: str = setting(
        "", "--http-server-key", "PEM file of the HTTPS server private key", metavar="FILE"
    )
    http_root_cert: str = setting(
        "",
        "--http-root-cert",
        "PEM file of the CA that signs client certificates (mutual TLS)",
        metavar="FILE",
    )
    http_restricted_api: list[str] = setting(
        [],
        "--http-restricted-api",
        "restrict API groups on HTTP to requests carrying a header, tritonserver's syntax "
        "API[,API...]:KEY=VALUE (groups: health, metadata, inference, shared-memory, "
        "model-config, model-repository, statistics, trace, logging); repeatable",
        kind=FlagKind.APPEND,
        metavar="API[,API...]:KEY=VALUE",
    )
    grpc_restricted_protocol: list[str] = setting(
        [],
        "--grpc-restricted-protocol",
        "restrict API groups on gRPC to calls carrying a metadata key, same syntax and groups "
        "as --http-restricted-api; the key to send is triton-grpc-protocol-KEY (as in "
        "tritonserver); repeatable",
        kind=FlagKind.APPEND,
        metavar="API[,API...]:KEY=VALUE",
    )
    allow_shared_memory: bool = setting(
        True,
        "--allow-shared-memory",
        "let clients register system and CUDA shared-memory regions; false refuses every "
        "registration",
        kind=FlagKind.BOOL,
    )

    # --- tracing and logging --------------------------------------------------------------------
    trace_config: list[str] = setting(
        [],
        "--trace-config",
        "tritonserver's trace settings, e.g. --trace-config=triton,file=/tmp/trace.json "
        "--trace-config=level=TIMESTAMPS --trace-config=rate=1; repeatable",
        kind=FlagKind.APPEND,
        parse=_trace_config,
        metavar="[MODE,]KEY=VALUE",
    )
    log_verbose: int = setting(
        0,
        "--log-verbose",
        "verbose logging level; > 0 logs debug messages",
        parse=int,
        metavar="LEVEL",
    )
    log_info: bool = setting(True, "--log-info", "log info messages", kind=FlagKind.BOOL)
    log_warning: bool = setting(True, "--log-warning", "log warnings", kind=FlagKind.BOOL)
    log_error: bool = setting(True, "--log-error", "log errors", kind=FlagKind.BOOL)
    log_file: str = setting(
        "", "--log-file", "write the log to this file instead of standard error"
    )
