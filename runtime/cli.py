"""The `trident` command. Flags keep tritonserver's names and meanings, so launch scripts written
for Triton carry over: `trident serve --model-repository=/models --grpc-port=8001 ...`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from trident import __version__
from trident.runtime.settings import ServerSettings

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def _cache_config(value: str) -> str:
    """One --cache-config value, checked now so a typo stops the command with a clear message."""
    from trident.runtime.core.response_cache import parse_cache_config
    from trident.runtime.errors import TridentError

    try:
        parse_cache_config([value])
    except TridentError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--cache-config: ")) from None
    return value


def _add_bool(parser: argparse.ArgumentParser, flag: str, default: bool, help_text: str) -> None:
    """tritonserver style: `--flag`, `--flag=true` or `--flag=false`."""
    parser.add_argument(
        flag,
        nargs="?",
        const=True,
        default=default,
        type=_bool,
        metavar="BOOL",
        help=f"{help_text} (default: {str(default).lower()})",
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerSettings()
    parser = argparse.ArgumentParser(
        prog="trident",
        description="Trident: a Triton-compatible inference server (KServe v2 over HTTP and gRPC).",
    )
    parser.add_argument("--version", action="version", version=f"trident {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve one or more model repositories",
        description="Serve Triton-style model repositories over HTTP, gRPC and Prometheus metrics.",
    )
    serve.add_argument(
        "--model-repository",
        "--model-store",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        dest="model_repository",
        help="a model repository folder (MODEL/VERSION/model files, optional MODEL/config.pbtxt); "
        "repeat for several. Default: ./model_repository when it exists.",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        default=defaults.http_port,
        help="HTTP port; 0 picks a free one (default: %(default)s)",
    )
    serve.add_argument(
        "--grpc-port",
        type=int,
        default=defaults.grpc_port,
        help="gRPC port; 0 picks a free one (default: %(default)s)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=defaults.metrics_port,
        help="Prometheus metrics port (default: %(default)s)",
    )
    serve.add_argument(
        "--http-address",
        default=defaults.http_address,
        help="address the HTTP server binds (default: %(default)s)",
    )
    serve.add_argument(
        "--grpc-address",
        default=defaults.grpc_address,
        help="address the gRPC server binds (default: %(default)s)",
    )
    serve.add_argument(
        "--grpc-implementation",
        choices=("native", "grpcio"),
        default=defaults.grpc_implementation,
        help="the gRPC server: native (Trident's own HTTP/2 server on asyncio, fast) or grpcio "
        "(grpc.aio) (default: %(default)s)",
    )
    serve.add_argument(
        "--metrics-address",
        default=defaults.metrics_address,
        help="address the metrics server binds (default: %(default)s)",
    )
    serve.add_argument(
        "--http-max-input-size",
        type=int,
        default=defaults.http_max_input_size,
        metavar="BYTES",
        help="largest HTTP request body accepted (default: %(default)s)",
    )
    _add_bool(serve, "--allow-http", defaults.allow_http, "serve the HTTP/REST protocol")
    _add_bool(serve, "--allow-grpc", defaults.allow_grpc, "serve the gRPC protocol")
    _add_bool(serve, "--allow-metrics", defaults.allow_metrics, "serve Prometheus metrics")
    serve.add_argument(
        "--model-control-mode",
        choices=("none", "poll", "explicit"),
        default=defaults.model_control_mode,
        help="none: load every model at start and never change; poll: also load, reload and "
        "unload models as the repository changes on disk; explicit: load only --load-model "
        "models at start, then load and unload through the repository API (default: %(default)s)",
    )
    serve.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="with --model-control-mode=explicit, a model to load at start; repeat for several, "
        "'*' loads all",
    )
    serve.add_argument(
        "--repository-poll-secs",
        type=float,
        default=defaults.repository_poll_secs,
        help="seconds between repository scans in poll mode (default: %(default)s)",
    )
    _add_bool(
        serve,
        "--strict-model-config",
        defaults.strict_model_config,
        "require complete config.pbtxt files instead of completing them from model files",
    )
    _add_bool(
        serve,
        "--strict-readiness",
        defaults.strict_readiness,
        "report ready only when every model is ready; false: ready once the server is up",
    )
    serve.add_argument(
        "--cache-config",
        action="append",
        default=[],
        type=_cache_config,
        metavar="CACHE,KEY=VALUE",
        help="enable the response cache, e.g. --cache-config=local,size=1048576 (bytes); models "
        "use it when their config says response_cache { enable: true }. Default: no cache",
    )
    _add_bool(
        serve,
        "--exit-on-error",
        defaults.exit_on_error,
        "exit at start when any model fails to load (otherwise serve the others and report "
        "the failure in the repository index)",
    )
    serve.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=defaults.exit_timeout_secs,
        help="seconds to wait for in-flight requests at shutdown (default: %(default)s)",
    )
    serve.add_argument(
        "--log-verbose",
        type=int,
        default=defaults.log_verbose,
        metavar="LEVEL",
        help="verbose logging level; > 0 logs debug messages (default: 0)",
    )
    _add_bool(serve, "--log-info", defaults.log_info, "log info messages")
    _add_bool(serve, "--log-warning", defaults.log_warning, "log warnings")
    _add_bool(serve, "--log-error", defaults.log_error, "log errors")
    serve.add_argument(
        "--log-file",
        default=defaults.log_file,
        help="write the log to this file instead of standard error",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    repositories = list(args.model_repository)
    if not repositories and Path("model_repository").is_dir():
        repositories = [Path("model_repository")]
    return ServerSettings(
        model_repositories=repositories,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        http_address=args.http_address,
        grpc_address=args.grpc_address,
        metrics_address=args.metrics_address,
        http_max_input_size=args.http_max_input_size,
        allow_http=args.allow_http,
        allow_grpc=args.allow_grpc,
        grpc_implementation=args.grpc_implementation,
        allow_metrics=args.allow_metrics,
        model_control_mode=args.model_control_mode,
        startup_models=list(args.load_model),
        repository_poll_secs=args.repository_poll_secs,
        strict_model_config=args.strict_model_config,
        strict_readiness=args.strict_readiness,
        cache_config=list(args.cache_config),
        exit_on_error=args.exit_on_error,
        exit_timeout_secs=args.exit_timeout_secs,
        log_verbose=args.log_verbose,
        log_info=args.log_info,
        log_warning=args.log_warning,
        log_error=args.log_error,
        log_file=args.log_file,
    )


def configure_logging(settings: ServerSettings) -> None:
    handler: logging.Handler = (
        logging.FileHandler(settings.log_file) if settings.log_file else logging.StreamHandler()
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("trident")
    logger.addHandler(handler)
    logger.propagate = False


def _run(settings: ServerSettings) -> int:
    from trident.runtime.server import ServerStartError, TridentServer

    try:
        import uvloop  # optional: a faster event loop
    except ImportError:
        uvloop = None
    server = TridentServer(settings)
    try:
        if uvloop is not None:
            uvloop.run(server.serve_forever())
        else:
            asyncio.run(server.serve_forever())
    except ServerStartError as exc:
        logging.getLogger("trident").error("%s", exc)
        return 1
    except OSError as exc:  # a port in use, an address that does not exist
        logging.getLogger("trident").error("cannot start: %s", exc)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["-h"], ["--help"]):
        # `trident --help` explains every flag: the one command's help follows the overview.
        parser.print_help()
        print("\nCOMMAND serve (the default when the first argument is a flag):\n")
        parser.parse_args(["serve", "--help"])
    if argv and argv[0].startswith("--") and argv[0] not in ("--version", "--help", "-h"):
        # tritonserver-style launch lines: `trident --model-repository=/models ...`
        argv.insert(0, "serve")
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help()
        return 2
    settings = settings_from_args(args)
    if not settings.model_repositories:
        parser.error("give at least one --model-repository DIR")
    configure_logging(settings)
    return _run(settings)


if __name__ == "__main__":
    sys.exit(main())
