"""The CLI's garbage-collector policy (``controller.collecting``): in force for one command.

A converge run raises the GC's thresholds (see ``cli._GC_THRESHOLDS``) and pauses the
collector while it builds what it keeps. In-process callers such as ``CliRunner`` run many
commands in one interpreter, so there the thresholds must be back to what they were once a
command ends, whether it succeeded or failed, and nothing may be frozen.
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

from controller import cli, collecting, loading


@pytest.fixture
def default_thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*saved)


def test_thresholds_hold_while_the_command_runs(default_thresholds: tuple[int, ...]) -> None:
    with click.Context(cli.main) as ctx:
        cli._collect_less_often(ctx, owns_process=False)
        assert gc.get_threshold() == cli._GC_THRESHOLDS
    assert gc.get_threshold() == default_thresholds


def test_the_converge_process_keeps_them_to_the_end(default_thresholds: tuple[int, ...]) -> None:
    # Put back, the default's next collection would walk all the command built as it exits.
    with click.Context(cli.main) as ctx:
        cli._collect_less_often(ctx, owns_process=True)
    assert gc.get_threshold() == cli._GC_THRESHOLDS


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


ESTATE = (
    VALID
    + """\
---
apiVersion: converge/v1
kind: RoleApp
metadata: {name: chat}
spec: {folder: chat, title: Chat, roles: [chatagent]}
"""
)


def converge_in_a_process(tmp_path: Path, probe: str, *args: str) -> str:
    """What ``probe`` printed last (``probe: ...``) around ``converge ARGS`` in a process.

    The probe runs first: it wraps what the test watches, and prints from the wrapper, so
    what it sees is what the command did, not what ``collecting.settle`` does at the end.
    """
    (tmp_path / "estate.yaml").write_text(ESTATE, encoding="utf-8")
    script = (
        "import gc, sys\n"
        "from controller import cli, loading, orchestrating\n"
        f"{probe}\n"
        "sys.argv = ['converge', *sys.argv[1:]]\n"
        "cli.run()\n"
    )
    state = [] if args[0] == "validate" else ["--state", f"sqlite:///{tmp_path / 'state.db'}"]
    done = subprocess.run(
        [sys.executable, "-c", script, *args, str(tmp_path), *state],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if line.startswith("probe: ")]
    assert said, done.stdout
    return said[-1].removeprefix("probe: ")


# Prints the freeze count before and after the wrapped call: "probe: before after".
WATCH = """\
def watch(owner, name):
    wrapped = getattr(owner, name)
    def watched(*args, **kwargs):
        before = gc.get_freeze_count()
        try:
            return wrapped(*args, **kwargs)
        finally:
            print("probe:", before, gc.get_freeze_count(), flush=True)
    setattr(owner, name, watched)
"""


def test_the_converge_process_freezes_what_it_loaded(tmp_path: Path) -> None:
    probe = WATCH + "watch(loading, 'load')"
    before, after = map(int, converge_in_a_process(tmp_path, probe, "validate").split())
    assert after > before


def test_the_converge_process_freezes_what_it_read_and_planned(tmp_path: Path) -> None:
    # Run.fetch freezes on its own; what the plan built is frozen by Run.plan's pause.
    probe = WATCH + "watch(orchestrating.Run, 'plan')"
    before, after = map(int, converge_in_a_process(tmp_path, probe, "plan").split())
    assert after > before


@pytest.mark.parametrize("command", ["plan", "drift"])
def test_in_process_plan_and_drift_leave_the_collector_unfrozen(
    tmp_path: Path, command: str, default_thresholds: tuple[int, ...]
) -> None:
    (tmp_path / "estate.yaml").write_text(ESTATE, encoding="utf-8")
    frozen = gc.get_freeze_count()
    state = f"sqlite:///{tmp_path / 'state.db'}"
    result = CliRunner().invoke(cli.main, [command, str(tmp_path), "--state", state])
    assert result.exit_code in (0, 2), result.output  # drift: 2, the roleapp is missing
    assert gc.get_freeze_count() == frozen
    assert gc.isenabled()
    assert gc.get_threshold() == default_thresholds


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


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.parametrize("freeze", [False, True])
def test_a_pause_holds_off_collections_then_gives_them_back(
    collector_enabled: None, freeze: bool
) -> None:
    before = gc.get_freeze_count()
    try:
        with collecting.paused(freeze=freeze):
            assert not gc.isenabled()
            kept = [[i] for i in range(1_000)]  # what a burst builds and keeps
        assert gc.isenabled()
        assert (gc.get_freeze_count() >= before + len(kept)) is freeze
    finally:
        gc.unfreeze()


def test_a_pause_gives_the_collector_back_when_the_burst_fails(collector_enabled: None) -> None:
    with pytest.raises(RuntimeError), collecting.paused(freeze=False):
        raise RuntimeError("a listing failed half way")
    assert gc.isenabled()


def test_a_pause_inside_a_pause_leaves_the_outer_one_in_charge(collector_enabled: None) -> None:
    with collecting.paused(freeze=False):
        with collecting.paused(freeze=False):
            pass
        assert not gc.isenabled()  # the outer burst is still under way
    assert gc.isenabled()


def test_the_converge_process_exits_with_all_frozen(tmp_path: Path) -> None:
    # The interpreter collects once on its way out: with everything frozen it walks nothing.
    probe = "import atexit\natexit.register(lambda: print('probe:', gc.get_count()[0], gc.get_threshold()[0]))"
    last = converge_in_a_process(tmp_path, probe, "validate")
    young, threshold = map(int, last.split())
    assert threshold == cli._GC_THRESHOLDS[0]
    assert young < 100, young  # settle() froze the young generation too
