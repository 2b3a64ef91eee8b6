"""The `trident` command. Flags keep tritonserver's names and meanings, so launch scripts written
for Triton carry over: `trident serve --model-repository=/models --grpc-port=8001 ...`."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from trident import __version__
from trident.runtime.errors import TridentError
from trident.runtime.settings import FlagKind, FlagSpec, ServerSettings

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def _checked(parse: Callable[[str], Any], flag: str) -> Callable[[str], Any]:
    """A setting's parser whose errors argparse prints as a usage error naming the flag."""

    def parse_flag(value: str) -> Any:
        try:
            return parse(value)
        except (ValueError, TridentError) as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag}: ")) from None

    parse_flag.__name__ = getattr(parse, "__name__", "value")
    return parse_flag


def _help(spec: FlagSpec, default: Any) -> str:
    if spec.kind is FlagKind.APPEND:
        return spec.help
    shown = (
        str(default).lower()
        if isinstance(default, bool)
        else (default if default != "" else "none")
    )
    return f"{spec.help} (default: {shown})".replace("%", "%%")


def _add_setting(parser: argparse.ArgumentParser, item: Field[Any], default: Any) -> None:
    spec: FlagSpec = item.metadata["flag"]
    options: dict[str, Any] = {"dest": item.name, "help": _help(spec, default)}
    if spec.metavar:
        options["metavar"] = spec.metavar
    elif spec.parse in (int, float):
        options["metavar"] = "N"
    if spec.choices:
        options["choices"] = spec.choices
    if spec.kind is FlagKind.BOOL:
        options.update(nargs="?", const=True, default=default, type=_bool)
        options.setdefault("metavar", "BOOL")
    elif spec.kind is FlagKind.APPEND:
        options.update(action="append", default=[])
        if spec.parse is not None:
            options["type"] = _checked(spec.parse, spec.flags[0])
    else:
        options["default"] = default
        if spec.parse is not None:
            options["type"] = _checked(spec.parse, spec.flags[0])
    parser.add_argument(*spec.flags, **options)


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
    # One table (runtime/settings.py) gives every flag, its help and its default.
    for item in fields(ServerSettings):
        _add_setting(serve, item, getattr(defaults, item.name))
    return parser


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    values = {item.name: getattr(args, item.name) for item in fields(ServerSettings)}
    settings = ServerSettings(**values)
    if not settings.model_repositories and Path("model_repository").is_dir():
        settings.model_repositories = [Path("model_repository")]
    return settings


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
        uvloop = None  # type: ignore[assignment]
    server = TridentServer(settings)

    async def serve() -> None:
        if not await server.serve_forever():
            # A model's execute never returned: its thread would keep this process alive for
            # ever (the interpreter joins such threads at exit, and so would the event loop's
            # shutdown). Run the exit handlers (model processes, logs) and leave now.
            atexit._run_exitfuncs()
            os._exit(1)

    try:
        if uvloop is not None:
            uvloop.run(serve())
        else:
            asyncio.run(serve())
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
