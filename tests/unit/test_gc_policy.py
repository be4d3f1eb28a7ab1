"""The CLI's garbage-collector policy: in force for one command, then put back.

A converge run raises the GC's thresholds (see ``cli._GC_THRESHOLDS``). In-process callers
such as ``CliRunner`` run many commands in one interpreter, so the thresholds must be back
to what they were once a command ends, whether it succeeded or failed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from controller import cli


@pytest.fixture
def default_thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*saved)


def test_thresholds_hold_while_the_command_runs(default_thresholds: tuple[int, ...]) -> None:
    with click.Context(cli.main) as ctx:
        cli._collect_less_often(ctx)
        assert gc.get_threshold() == cli._GC_THRESHOLDS
    assert gc.get_threshold() == default_thresholds


@pytest.mark.parametrize("content", ["apiVersion: converge/v1\n", "kind: [unclosed\n"])
def test_thresholds_are_restored_after_a_command(
    content: str, tmp_path: Path, default_thresholds: tuple[int, ...]
) -> None:
    (tmp_path / "estate.yaml").write_text(content, encoding="utf-8")
    result = CliRunner().invoke(cli.main, ["validate", str(tmp_path)])
    assert result.exit_code == 1  # both are invalid: the policy must not leak on errors either
    assert gc.get_threshold() == default_thresholds
