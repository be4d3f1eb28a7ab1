"""The command line: parses flags, calls the layers, maps errors to exit codes.

The only module that imports ``click``. It holds no logic of its own beyond wiring: each
command hands its options to a module that does the work (validating, the emulator,
``orchestrating`` for plan/apply/drift) and prints what comes back. Every error leaves
through ``ConvergeGroup.invoke``: a ``ConvergeError`` prints its message and exits with
its code; anything else is an internal error, shown without a traceback unless ``-v``.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from controller import __version__, durations, redaction, validating
from controller.errors import ConvergeError, ManifestError


class Context:
    """What every command shares: verbosity, colour, and the secrets to keep out of output."""

    def __init__(self) -> None:
        self.verbose = 0
        self.no_color = bool(os.environ.get("NO_COLOR"))
        self.secrets: set[str] = set()

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
                state.echo(traceback.format_exc(), err=True)
            state.echo(
                f"Error: internal error: {type(exc).__name__}: {exc} (run with -v for details)",
                err=True,
            )
            ctx.exit(1)


def _verbose_option(f: Callable[..., Any]) -> Callable[..., Any]:
    def set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
        if value:
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


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@common
@click.pass_obj
def validate(state: Context, paths: tuple[str, ...]) -> None:
    """Check manifests against the schemas and each other. No network.

    Prints every problem as FILE:LINE: KEY: MESSAGE and exits 1, or one summary line and
    exits 0. Secret variables need not be set: validate never uses their values.
    """
    manifests = validating.validate(paths or (".",))
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
