"""Shared fixtures. Markers are set by directory: tests/unit -> unit, tests/integration ->
integration, tests/e2e -> e2e. Helpers to start servers and write models: tests/helpers.py."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import (
    IDENTITY_MODEL_PY,
    identity_config,
    write_model,
)

_MARKERS = ("unit", "integration", "e2e")


#: How long the interpreter may take to exit once the tests are done.
EXIT_WATCHDOG_S = 120.0


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread that never ends (a hung model execute a test left behind) would keep the
    interpreter from exiting after the summary, for ever: past EXIT_WATCHDOG_S, print every
    thread's stack and exit with a failure instead."""

    def watchdog() -> None:
        sys.stderr.write(f"\ntests: still not exited {EXIT_WATCHDOG_S:g} s after the run:\n")
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(3)

    timer = threading.Timer(EXIT_WATCHDOG_S, watchdog)
    timer.daemon = True  # a normal exit does not wait for it
    timer.start()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for folder in _MARKERS:
            if folder in parts:
                item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="module")
def ident_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding one model, ident: the FP32 [ 16 ] identity (helpers.identity_config),
    for the modules that test the server around a model rather than the model."""
    repository = tmp_path_factory.mktemp("ident_repo")
    write_model(repository, "ident", IDENTITY_MODEL_PY, identity_config("ident"))
    return repository
