"""Server settings: one typed object, built by the CLI (runtime/cli.py) or by tests.

Field names follow tritonserver's flags (`--model-repository` -> `model_repositories`, ...).
Every field documents its default; `trident serve --help` prints the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServerSettings:
    #: Model repositories to serve (`--model-repository`, repeatable).
    model_repositories: list[Path] = field(default_factory=list)
    #: HTTP (KServe v2 REST) port; 0 picks a free port. Default 8000.
    http_port: int = 8000
    #: gRPC port; 0 picks a free port. Default 8001.
    grpc_port: int = 8001
    #: Prometheus metrics port; 0 picks a free port. Default 8002.
    metrics_port: int = 8002
    #: Address the HTTP server binds. Default 0.0.0.0 (all interfaces), as tritonserver.
    http_address: str = "0.0.0.0"
    #: Address the gRPC server binds. Default 0.0.0.0.
    grpc_address: str = "0.0.0.0"
    #: Address the metrics server binds. Default 0.0.0.0.
    metrics_address: str = "0.0.0.0"
    #: Serve HTTP / gRPC / metrics at all. Default true for each.
    allow_http: bool = True
    allow_grpc: bool = True
    #: The gRPC server: "native" (Trident's own, on asyncio; the default and the fast one) or
    #: "grpcio" (grpc.aio). Both serve the same services with the same servicers.
    grpc_implementation: str = "native"
    allow_metrics: bool = True
    #: none: load everything at start, never change; poll: also reload what changes on disk;
    #: explicit: load only --load-model models at start, then through the repository API.
    model_control_mode: str = "none"
    #: Models to load at start in explicit mode; "*" loads all. Default none.
    startup_models: list[str] = field(default_factory=list)
    #: Seconds between repository scans in poll mode. Default 15.
    repository_poll_secs: float = 15.0
    #: Require complete config.pbtxt files: no auto-completion from model files. Default false.
    strict_model_config: bool = False
    #: Ready only when every model is ready (true, the default) or when the server is up.
    strict_readiness: bool = True
    #: Response cache (`--cache-config`, repeatable), tritonserver's syntax: ["local,size=BYTES"].
    #: Models use it when their config says `response_cache { enable: true }`. Default: no cache.
    cache_config: list[str] = field(default_factory=list)
    #: Exit at start when a model fails to load (default false: serve the others and report it).
    exit_on_error: bool = False
    #: Seconds to wait for in-flight requests at shutdown. Default 30.
    exit_timeout_secs: float = 30.0
    #: Verbose log level (0 = off). Default 0.
    log_verbose: int = 0
    #: Log info / warning / error messages. Default true.
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    #: Log file (empty: standard error).
    log_file: str = ""
    #: Largest HTTP request body accepted, in bytes (tritonserver's --http-max-input-size).
    #: Default 64 MiB.
    http_max_input_size: int = 64 * 1024 * 1024
    #: Worker threads for the gRPC server's synchronous parts. Default 4.
    grpc_workers: int = 4
