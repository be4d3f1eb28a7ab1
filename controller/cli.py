"""The command line: parses flags, calls the layers, maps errors to exit codes.

The only module that imports ``click``. It holds no logic of its own beyond wiring: each
command hands its options to a module that does the work (validating, the emulator,
``orchestrating`` for plan/apply/drift) and prints what comes back. Every error leaves
through ``ConvergeGroup.invoke``: a ``ConvergeError`` prints its message and exits with
its code; anything else is an internal error, shown without a traceback unless ``-v``.

Why the layers are imported inside the commands: a run is a short-lived process, and
loading the network, state and planning layers (httpx, croniter, sqlite, ...) costs more
than ``--version``, ``--help`` or ``validate`` do. At module level this imports only
click and light modules; tests/unit/test_startup.py checks that it stays so.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from controller import __version__, collecting, defaults, durations, redaction
from controller.errors import ConvergeError, ManifestError

if TYPE_CHECKING:
    from controller import orchestrating
    from controller.applying import Progress


class Context:
    """What every command shares: verbosity, colour, and the secrets to keep out of output."""

    def __init__(self, *, owns_process: bool = False) -> None:
        self.verbose = 0
        self.no_color = bool(os.environ.get("NO_COLOR"))
        self.secrets: set[str] = set()
        # True when this command is the whole process (the `converge` script, `python -m
        # controller`), not one call among many (CliRunner in tests): what it loads then
        # lives until exit, and the garbage collector may stop scanning it (loading.load).
        self.owns_process = owns_process

    @property
    def color(self) -> bool:
        return not self.no_color and sys.stdout.isatty()

    def echo(self, text: str, *, err: bool = False) -> None:
        click.echo(redaction.redact(text, self.secrets), err=err)


class ConvergeGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConvergeError as exc:
            state = ctx.find_object(Context) or Context()
            lines = (
                [str(p) for p in exc.problems]
                if isinstance(exc, ManifestError)
                else [f"Error: {exc}"]
            )
            for line in lines:
                state.echo(line, err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except Exception as exc:  # the last line of defence: never a bare traceback
            state = ctx.find_object(Context) or Context()
            if state.verbose:
                import traceback

                state.echo(traceback.format_exc(), err=True)
            state.echo(
                f"Error: internal error: {type(exc).__name__}: {exc} (run with -v for details)",
                err=True,
            )
            ctx.exit(1)


def _verbose_option(f: Callable[..., Any]) -> Callable[..., Any]:
    def set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
        if value:
            import logging  # ~10 ms to import: only when -v asks for log lines

            state = ctx.ensure_object(Context)
            state.verbose = max(state.verbose, value)
            logging.basicConfig(
                level=logging.DEBUG if value > 1 else logging.INFO, stream=sys.stderr
            )
        return value

    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=set_verbose,
        is_eager=True,
        help="More detail (-vv: one line per HTTP request).",
    )(f)


def _no_color_option(f: Callable[..., Any]) -> Callable[..., Any]:
    def set_no_color(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(Context).no_color = True
        return value

    return click.option(
        "--no-color",
        is_flag=True,
        expose_value=False,
        callback=set_no_color,
        help="No ANSI colours (also the NO_COLOR environment variable).",
    )(f)


def common(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command takes."""
    return _verbose_option(_no_color_option(f))


@click.group(cls=ConvergeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="converge")
@common
@click.pass_context
def main(ctx: click.Context) -> None:
    """Declarative reconciliation of Era roleapps and backup policies.

    Commit manifests to git; converge reads live state from the APIs, diffs it against the
    manifests and plans and applies the calls that make live match git.
    """
    ctx.ensure_object(Context)
    if ctx.invoked_subcommand != "emulator":  # a long-running server keeps the defaults
        _collect_less_often(ctx, owns_process=ctx.obj.owns_process)


def run() -> None:
    """The `converge` script and `python -m controller`: main() in a process of its own."""
    try:
        main(obj=Context(owns_process=True))
    finally:
        collecting.settle()


# Why: the cyclic GC's default first threshold (700 net allocations) suits long-running
# programs. A converge run is short and keeps nearly all it builds to the end (documents,
# manifests, live objects, the plan), with almost no cycles, so each collection rescans
# survivors for nothing. Over 10,000 manifests (CPU, min of 7-11 alternating runs) this
# cut validate 1.51 -> 1.23 s and plan 3.02 -> 2.60 s, about what gc.disable() saves, with
# peak memory unchanged. Collections still run, every 50,000 net allocations, so cycles
# that an apply's threads or retries leave are still freed. gc.freeze() after the imports
# was tried on top and added nothing measurable. The other rules: ``controller.collecting``.
_GC_THRESHOLDS = (50_000, 20, 20)


def _collect_less_often(ctx: click.Context, *, owns_process: bool) -> None:
    previous = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLDS)
    if not owns_process:
        # Restored when the command ends, for callers running several in one process
        # (tests). Not in the CLI's own: the default's next collection would walk all the
        # command built since the last one (~10 ms after an apply of 1,000) as it exits.
        ctx.call_on_close(lambda: gc.set_threshold(*previous))


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@common
@click.pass_obj
def validate(state: Context, paths: tuple[str, ...]) -> None:
    """Check manifests against the schemas and each other. No network.

    Prints every problem as FILE:LINE: KEY: MESSAGE and exits 1, or one summary line and
    exits 0. Secret variables need not be set: validate never uses their values.
    """
    from controller import validating

    manifests = validating.validate(paths or (".",), freeze=state.owns_process)
    state.echo(f"OK: {validating.summary(manifests)}")
    if state.verbose and manifests.unset_secrets:
        state.echo(
            "Secret variables not set (plan and apply need them for real servers):", err=True
        )
        for unset in manifests.unset_secrets:
            state.echo(f"  {unset}", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--latency", default="0ms", show_default=True, help="Delay added to every request (e.g. 10ms)."
)
@click.option(
    "--error-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Share of requests answered 503.",
)
@click.option(
    "--data", "data_dir", type=click.Path(file_okay=False), help="Persist state in this directory."
)
@click.option(
    "--page-cap",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Largest roleapps page.",
)
@common
@click.pass_obj
def emulator(
    state: Context,
    host: str,
    port: int,
    latency: str,
    error_rate: float,
    data_dir: str | None,
    page_cap: int,
) -> None:
    """Serve the four emulated APIs (era, element, vcda, commvault) over HTTP.

    A faithful, stateful implementation of the APIs converge talks to, for trying converge
    without accounts and for tests. Prints each API's URL and the credentials it accepts.
    """
    from controller import emulator as emulating  # the server is only loaded when asked for

    try:
        latency_seconds = durations.parse(latency)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--latency") from exc
    emulating.serve(
        host=host,
        port=port,
        latency=latency_seconds,
        error_rate=error_rate,
        data_dir=Path(data_dir) if data_dir else None,
        page_cap=page_cap,
        echo=lambda line: click.echo(line),
    )


# -- plan and apply -----------------------------------------------------------------------


def _duration(_ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return durations.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from exc


def state_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options of every command that reads state or live systems."""
    options = [
        click.option(
            "--state",
            "state_url",
            envvar="CONVERGE_STATE",
            default=defaults.DEFAULT_STATE,
            show_default=True,
            help="Where converge keeps its inventory: sqlite:///PATH or postgresql://...",
        ),
        click.option(
            "--state-schema",
            help="PostgreSQL schema for the state (several estates in one database).",
        ),
        click.option(
            "--selector",
            "selectors",
            multiple=True,
            metavar="KEY=VALUE",
            help="Only objects with this label.",
        ),
        click.option(
            "--target",
            "targets",
            multiple=True,
            metavar="KIND/NAME",
            help="Only this object (RoleApp/NAME, BackupPolicy/NAME or KIND/CONNECTION/NAME); repeatable.",
        ),
        click.option(
            "--lock-timeout",
            default="0s",
            show_default=True,
            callback=_duration,
            help="How long apply waits for another run's state lock.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _run_options(
    paths: tuple[str, ...],
    *,
    state_url: str,
    state_schema: str | None,
    selectors: tuple[str, ...],
    targets: tuple[str, ...],
    lock_timeout: float,
    prune: bool = True,
    parallelism: int | None = None,
    owns_process: bool,
) -> orchestrating.RunOptions:
    from controller import orchestrating

    return orchestrating.RunOptions(
        paths=paths or (".",),
        state_url=state_url,
        state_schema=state_schema,
        scope=orchestrating.Scope.parse(selectors, targets),
        lock_timeout=lock_timeout,
        prune=prune,
        parallelism=parallelism,
        freeze_loaded=owns_process,
    )


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    help="Save the plan for `apply --plan FILE`.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@click.option(
    "--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes (0 when none)."
)
@click.option(
    "--no-prune", is_flag=True, help="Do not plan deletes of objects whose manifest is gone."
)
@state_options
@common
@click.pass_obj
def plan(
    state: Context,
    paths: tuple[str, ...],
    out: str | None,
    fmt: str,
    detailed_exitcode: bool,
    no_prune: bool,
    **options: Any,
) -> None:
    """Read live state and show what apply would do. Changes nothing.

    Exit codes: 0 success (with --detailed-exitcode: no changes), 2 changes pending
    (--detailed-exitcode), 1 error, 4 a safety guard (preventDestroy) refuses the plan.
    """
    from controller import orchestrating, rendering

    with orchestrating.Run(
        _run_options(paths, prune=not no_prune, owns_process=state.owns_process, **options),
        command="plan",
    ) as run:
        state.secrets |= run.manifests.secret_values()
        the_plan = run.plan()
    if out:
        Path(out).write_text(rendering.render_plan(the_plan, "json") + "\n", encoding="utf-8")
    state.echo(rendering.render_plan(the_plan, fmt, color=state.color))
    if out:
        state.echo(
            f"Saved the plan to {out}; apply it exactly with `converge apply --plan {out}`.",
            err=True,
        )
    orchestrating.check_guards(the_plan)  # preventDestroy fails a plan too; the budget is apply's
    if detailed_exitcode and the_plan.has_changes:
        sys.exit(2)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Apply this saved plan, if it is not stale.",
)
@click.option(
    "--auto-approve", is_flag=True, help="Apply without asking (needed when there is no terminal)."
)
@click.option(
    "--parallelism", type=click.IntRange(1, 256), help="Most requests in flight per connection."
)
@click.option("--no-wait", is_flag=True, help="Trigger backups without following them to the end.")
@click.option(
    "--max-deletes",
    default=10,
    show_default=True,
    type=click.IntRange(0),
    help="Refuse a plan deleting more.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--no-prune", is_flag=True, help="Do not delete objects whose manifest is gone.")
@state_options
@common
@click.pass_obj
def apply(
    state: Context,
    paths: tuple[str, ...],
    plan_file: str | None,
    auto_approve: bool,
    parallelism: int | None,
    no_wait: bool,
    max_deletes: int,
    fmt: str,
    no_prune: bool,
    **options: Any,
) -> None:
    """Converge live state to the manifests (or to a saved plan).

    Shows the plan, then asks on a terminal; elsewhere it needs --auto-approve or --plan.
    Exit codes: 0 done, 1 error (nothing applied), 3 stale saved plan, 4 refused by a
    guard or the state lock, 5 some actions failed (the report lists each).
    """
    from controller import orchestrating, rendering
    from controller.applying import ApplySettings
    from controller.rendering import results

    interactive = sys.stdin.isatty()
    if not (auto_approve or plan_file or interactive):
        raise orchestrating.UsageError(
            "apply needs confirmation and there is no terminal: pass --auto-approve, or --plan FILE from `converge plan --out`"
        )
    run_options = _run_options(
        paths,
        prune=not no_prune,
        parallelism=parallelism,
        owns_process=state.owns_process,
        **options,
    )
    with orchestrating.Run(run_options, command="apply") as run:
        state.secrets |= run.manifests.secret_values()
        run.lock()
        if plan_file:
            the_plan = rendering.load_plan(Path(plan_file).read_text(encoding="utf-8"))
            run.check_stale(the_plan)
        else:
            the_plan = run.plan()
        if fmt == "text":
            state.echo(rendering.render_plan(the_plan, "text", color=state.color))
        orchestrating.check_guards(the_plan, max_deletes=max_deletes)
        needs_answer = the_plan.has_changes and not (auto_approve or plan_file)
        if needs_answer and not click.confirm("Apply these changes?", default=False, err=True):
            state.echo("Apply cancelled; nothing was changed.", err=True)
            sys.exit(1)
        printer = _ProgressPrinter(state, to_stderr=fmt != "text")
        report = run.apply(
            the_plan, settings=ApplySettings(wait_for_backups=not no_wait), on_progress=printer
        )
        printer.finish()
    if fmt == "json":
        state.echo(results.render_json(report))
    elif the_plan.has_changes:
        state.echo(results.render_text(report))
    sys.exit(report.exit_code)


class _ProgressPrinter:
    """Progress of an apply: one rewritten status line on a terminal, plain lines elsewhere."""

    def __init__(self, state: Context, *, to_stderr: bool) -> None:
        self.state = state
        self.terminal = sys.stderr.isatty()
        self.to_stderr = to_stderr or self.terminal
        self.lock = threading.Lock()
        self.width = 0

    def __call__(self, progress: Progress) -> None:
        if self.terminal:
            with self.lock:
                self._status(progress)
        elif progress.result is not None:  # a started action prints nothing in a log
            from controller.rendering import results  # loaded by apply already

            line = results.progress_line(progress)  # made outside the lock the threads share
            with self.lock:
                self.state.echo(line, err=self.to_stderr)

    def _status(self, progress: Progress) -> None:
        from controller.rendering import results

        action = progress.action
        if progress.result is not None and progress.result.outcome != "succeeded":
            self._clear()
            self.state.echo(results.describe(progress.result), err=True)
        line = f"[{progress.done}/{progress.total}] {action.kind} {action.ref}"[:120]
        click.echo("\r" + line.ljust(self.width), nl=False, err=True)
        self.width = len(line)

    def _clear(self) -> None:
        click.echo("\r" + " " * self.width + "\r", nl=False, err=True)

    def finish(self) -> None:
        if self.terminal and self.width:
            self._clear()


# -- state --------------------------------------------------------------------------------


def state_store_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--state-schema", help="PostgreSQL schema for the state.")(f)
    return click.option(
        "--state",
        "state_url",
        envvar="CONVERGE_STATE",
        default=defaults.DEFAULT_STATE,
        show_default=True,
        help="The state: sqlite:///PATH or postgresql://...",
    )(f)


@main.group(cls=ConvergeGroup)
def state() -> None:
    """Inspect and repair the state: the inventory of managed objects, and the lock."""


def _open_state(state_url: str, state_schema: str | None) -> Any:
    from controller.state import open_store

    return open_store(state_url, schema=state_schema)


def _matching(entries: list[Any], name: str) -> list[Any]:
    """NAME, KIND/NAME or KIND/CONNECTION/NAME."""
    parts = name.split("/")
    if len(parts) == 1:
        return [e for e in entries if e.name == name]
    if len(parts) == 2:
        return [e for e in entries if (e.kind, e.name) == tuple(parts)]
    return [e for e in entries if (e.kind, e.connection, e.name) == tuple(parts)]


def _entry_json(entry: Any) -> dict[str, Any]:
    return {
        "kind": entry.kind,
        "connection": entry.connection,
        "name": entry.name,
        "id": entry.id,
        "prevent_destroy": entry.prevent_destroy,
        "applied_at": entry.applied_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@state.command("list")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@state_store_options
@common
@click.pass_obj
def state_list(ctx_state: Context, fmt: str, state_url: str, state_schema: str | None) -> None:
    """Every object converge manages (created or adopted), by connection."""
    import json

    store = _open_state(state_url, state_schema)
    try:
        entries = sorted(store.inventory(), key=lambda e: (e.kind, e.connection, e.name))
    finally:
        store.close()
    if fmt == "json":
        ctx_state.echo(json.dumps([_entry_json(e) for e in entries], indent=2, sort_keys=True))
        return
    if not entries:
        ctx_state.echo("The inventory is empty: converge manages no objects yet.")
        return
    for entry in entries:
        guard = "  preventDestroy" if entry.prevent_destroy else ""
        ctx_state.echo(f"{entry.kind}/{entry.connection}/{entry.name}  {entry.id}{guard}")
    ctx_state.echo(f"{len(entries)} object(s).")


@state.command("show")
@click.argument("name")
@state_store_options
@common
@click.pass_obj
def state_show(ctx_state: Context, name: str, state_url: str, state_schema: str | None) -> None:
    """What the state knows of NAME (or KIND/NAME, KIND/CONNECTION/NAME)."""
    store = _open_state(state_url, state_schema)
    try:
        entries = _matching(store.inventory(), name)
        if not entries:
            raise ConvergeError(f"{name} is not in the inventory (see `converge state list`)")
        for entry in entries:
            ctx_state.echo(f"{entry.kind}/{entry.connection}/{entry.name}")
            ctx_state.echo(f"  id:              {entry.id}")
            ctx_state.echo(f"  preventDestroy:  {str(entry.prevent_destroy).lower()}")
            ctx_state.echo(f"  last applied:    {entry.applied_at:%Y-%m-%d %H:%M:%S}Z")
            for record in store.backups(policy=entry.name, connection=entry.connection):
                ctx_state.echo(
                    f"  backup {record.backup_id}: {record.state} (started {record.started_at:%Y-%m-%d %H:%M}Z)"
                )
    finally:
        store.close()


@state.command("forget")
@click.argument("name")
@click.option("--lock-timeout", default="0s", show_default=True, callback=_duration)
@state_store_options
@common
@click.pass_obj
def state_forget(
    ctx_state: Context, name: str, lock_timeout: float, state_url: str, state_schema: str | None
) -> None:
    """Stop managing NAME without touching the live system (like `terraform state rm`).

    The object stays on the server; converge will report it as unmanaged and never prune it.
    """
    store = _open_state(state_url, state_schema)
    try:
        with store.lock(holder=f"converge state forget {name}", timeout=lock_timeout):
            entries = _matching(store.inventory(), name)
            if not entries:
                raise ConvergeError(f"{name} is not in the inventory (see `converge state list`)")
            if len(entries) > 1:
                listed = ", ".join(f"{e.kind}/{e.connection}/{e.name}" for e in entries)
                raise ConvergeError(
                    f"{name} is ambiguous: {listed}; name one as KIND/CONNECTION/NAME"
                )
            entry = entries[0]
            store.remove_inventory(entry.kind, entry.connection, entry.name)
    finally:
        store.close()
    ctx_state.echo(
        f"Forgot {entry.kind}/{entry.connection}/{entry.name} (id {entry.id}); the live object is untouched."
    )


@state.command("unlock")
@state_store_options
@common
@click.pass_obj
def state_unlock(ctx_state: Context, state_url: str, state_schema: str | None) -> None:
    """Release a stuck state lock. Only when no converge run is really going on."""
    store = _open_state(state_url, state_schema)
    try:
        info = store.lock_info()
        released = store.force_unlock()
    finally:
        store.close()
    if released and info:
        ctx_state.echo(f"Released the lock held by {info[0]} since {info[1]:%Y-%m-%d %H:%M:%S}Z.")
    elif released:
        ctx_state.echo("Released the lock.")
    else:
        ctx_state.echo("The state was not locked.")


# -- drift --------------------------------------------------------------------------------


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "junit"]),
    default="text",
    show_default=True,
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report to FILE (stdout gets one summary line).",
)
@state_options
@common
@click.pass_obj
def drift(
    state: Context, paths: tuple[str, ...], fmt: str, output: str | None, **options: Any
) -> None:
    """Report drift and backup compliance. Writes nothing to any API.

    Every declared roleapp is in_sync, drifted (with each field's live and desired value)
    or missing; an object converge manages whose manifest is gone is orphaned; live objects
    converge never managed are listed as unmanaged. Every backup policy shows its state.
    Exit codes: 0 no drift and every policy compliant (unmanaged objects, running and
    suspended policies do not count), 2 drift or a non-compliant policy, 1 error.
    """
    from controller import drifting, orchestrating  # loaded only for this command
    from controller.rendering import drift_text
    from controller.rendering.drift import render_drift

    run_options = _run_options(paths, owns_process=state.owns_process, **options)
    with orchestrating.Run(run_options, command="drift") as run:
        state.secrets |= run.manifests.secret_values()
        with run.building():  # all it reads and compares is kept to the report
            report = drifting.check(run)
    text = render_drift(report, fmt, color=state.color and output is None)
    if output:
        Path(output).write_text(redaction.redact(text, state.secrets), encoding="utf-8")
        state.echo(f"{drift_text.summary_line(report)} Report ({fmt}) written to {output}.")
    else:
        state.echo(text.rstrip("\n"))
    if not report.clean:
        sys.exit(2)
