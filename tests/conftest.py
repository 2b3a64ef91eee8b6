"""Shared fixtures. Markers are set by directory: tests/unit -> unit, tests/integration ->
integration, tests/e2e -> e2e. Helpers to start servers and write models: tests/helpers.py."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import RunningServer, running_server

_MARKERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for folder in _MARKERS:
            if folder in parts:
                item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture
def server_factory() -> Callable[..., contextlib.AbstractContextManager[RunningServer]]:
    """`with server_factory(repo_dir, **settings) as srv:` (see tests/helpers.running_server)."""
    return running_server
