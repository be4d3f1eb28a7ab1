"""Fixtures for the validation tests: an empty working folder, and no network.

Every test here runs in its own empty working directory, so the file names in error lines
are short and relative (``bad.yaml:7: ...``), with no network: ``validate`` promises none,
and a connect attempt fails the test.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from runs import clean_environ


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        pytest.fail(f"validate opened a network connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name not in clean_environ():
            monkeypatch.delenv(name)
    yield tmp_path
