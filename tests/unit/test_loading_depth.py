"""The cheap depth bound in front of loading's exact depth check never skips a deep document."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller import loading


def _nest(kinds: list[str], *, block: bool) -> str:
    """YAML text nesting one collection per kind: flow ``[`` / ``{``, or block ``-`` / ``k:``."""
    if not block:
        text = "x"
        for kind in reversed(kinds):
            text = f"[{text}]" if kind == "seq" else f"{{k: {text}}}"
        return text
    lines: list[str] = []
    for depth, kind in enumerate(kinds):
        lines.append("  " * depth + ("-" if kind == "seq" else "k:"))
    lines.append("  " * len(kinds) + "x")
    return "\n".join(lines) + "\n"


@settings(max_examples=200)
@given(
    kinds=st.lists(st.sampled_from(["seq", "map"]), min_size=1, max_size=90),
    block=st.booleans(),
    documents=st.integers(1, 3),
)
def test_the_bound_only_skips_what_the_exact_check_passes(
    kinds: list[str], block: bool, documents: int
) -> None:
    text = "---\n".join([_nest(kinds, block=block)] * documents)
    if loading._surely_shallow(text):
        loading._check_depth(text)  # would raise _TooLarge past MAX_DEPTH
    if len(kinds) > loading.MAX_DEPTH:
        assert not loading._surely_shallow(text)


def test_ordinary_manifests_skip_the_second_parse() -> None:
    doc = (
        "apiVersion: converge/v1\nkind: RoleApp\n"
        "metadata: {name: app-00001, labels: {team: team-1}}\n"
        "spec:\n  folder: f-1\n  roles: [a, b]\n  opts: {recv_timeout: 30, visible: true}\n"
    )
    assert loading._surely_shallow("---\n".join([doc] * 1000))
