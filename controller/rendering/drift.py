"""Drift report renderers, registered by format name: ``render_drift(report, fmt)``.

Called by the CLI (``drift --format``). The same shape as ``render_plan``: each renderer
is a pure ``render(report, *, color=False) -> str``, so a new format is one module and one
line in ``DRIFT_RENDERERS``. Kept apart from ``rendering/__init__.py`` so that loading a
plan renderer never loads the drift ones.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.drifting import DriftReport
from controller.rendering import drift_json, drift_junit, drift_markdown, drift_text

DriftRenderer = Callable[..., str]  # (report, *, color: bool = False) -> str

DRIFT_RENDERERS: dict[str, DriftRenderer] = {
    "text": drift_text.render,
    "json": drift_json.render,
    "markdown": drift_markdown.render,
    "junit": drift_junit.render,
}


def render_drift(report: DriftReport, fmt: str, *, color: bool = False) -> str:
    """``report`` in format ``fmt``; ``color`` only matters to ``text``. ValueError if unknown."""
    try:
        renderer = DRIFT_RENDERERS[fmt]
    except KeyError:
        known = ", ".join(sorted(DRIFT_RENDERERS))
        raise ValueError(f"unknown drift format {fmt!r} (use one of: {known})") from None
    return renderer(report, color=color)
