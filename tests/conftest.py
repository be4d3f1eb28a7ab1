"""Fixtures every test folder shares: one throwaway PostgreSQL server per test session.

It is started only when a test asks for ``pg_server`` (tests/pgserver.py); where no server
can be started the test skips with the reason, except with CI=true, where it fails.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_pgserver() -> ModuleType:
    # By path, so it works under any pytest import mode and without tests/__init__.py.
    spec = importlib.util.spec_from_file_location(
        "converge_tests_pgserver", Path(__file__).resolve().parent / "pgserver.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing it
    spec.loader.exec_module(module)
    return module


pgserver = _load_pgserver()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    try:
        server = pgserver.start()
    except pgserver.PgUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no PostgreSQL server could be started: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        yield server
    finally:
        pgserver.stop(server)
