"""The CLI's garbage-collector policy: in force for one command, then put back.

A converge run raises the GC's thresholds (see ``cli._GC_THRESHOLDS``). In-process callers
such as ``CliRunner`` run many commands in one interpreter, so the thresholds must be back
to what they were once a command ends, whether it succeeded or failed.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from controller import cli, loading


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


VALID = """\
apiVersion: converge/v1
kind: Connection
metadata: {name: era-main}
spec: {api: era, url: sandbox}
"""


def test_in_process_commands_leave_the_collector_unfrozen(tmp_path: Path) -> None:
    # gc.freeze() hides garbage cycles alive at that moment for good: fine for a process
    # that exits after one command, a leak for a caller running many (hypothesis + CliRunner).
    (tmp_path / "estate.yaml").write_text(VALID, encoding="utf-8")
    frozen = gc.get_freeze_count()
    result = CliRunner().invoke(cli.main, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert gc.get_freeze_count() == frozen


def test_the_converge_process_freezes_what_it_loaded(tmp_path: Path) -> None:
    (tmp_path / "estate.yaml").write_text(VALID, encoding="utf-8")
    probe = (
        "import gc, sys\n"
        "from controller import cli\n"
        "sys.argv = ['converge', 'validate', sys.argv[1]]\n"
        "try:\n"
        "    cli.run()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_freeze_count())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(done.stdout.splitlines()[-1]) > 0, done.stdout


@pytest.mark.parametrize("freeze", [False, True])
def test_loading_freezes_only_when_asked(tmp_path: Path, freeze: bool) -> None:
    (tmp_path / "estate.yaml").write_text(VALID, encoding="utf-8")
    before = gc.get_freeze_count()
    try:
        result = loading.load([tmp_path], environ={}, freeze=freeze)
        assert len(result.documents) == 1
        assert (gc.get_freeze_count() > before) is freeze
    finally:
        gc.unfreeze()  # the test session is a long-lived process: give it all back
