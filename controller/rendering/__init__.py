"""Rendering: pure functions from a Plan to text, registered by format name.

Called by the CLI (``plan --format``, ``apply``'s preview, ``plan --out``). Renderers never
decide anything and never print: each is ``render(plan, *, color=False) -> str``, so a new
format is one module and one line in ``PLAN_RENDERERS`` (octoDNS plan outputs).
``load_plan`` reads back what the ``json`` renderer wrote, for ``apply --plan FILE``.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.plans import Plan
from controller.rendering import jsondoc, markdown, text

PlanRenderer = Callable[..., str]  # (plan, *, color: bool = False) -> str

PLAN_RENDERERS: dict[str, PlanRenderer] = {
    "text": text.render,
    "json": jsondoc.render,
    "markdown": markdown.render,
}


def render_plan(plan: Plan, fmt: str, *, color: bool = False) -> str:
    """``plan`` in format ``fmt``; ``color`` only matters to ``text``. ValueError if unknown."""
    try:
        renderer = PLAN_RENDERERS[fmt]
    except KeyError:
        known = ", ".join(sorted(PLAN_RENDERERS))
        raise ValueError(f"unknown plan format {fmt!r} (use one of: {known})") from None
    return renderer(plan, color=color)


def load_plan(source: str) -> Plan:
    """A plan saved as JSON by ``render_plan(plan, "json")``; ConvergeError if it is not one."""
    return jsondoc.load_plan(source)
