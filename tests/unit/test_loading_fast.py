"""Loading straight from parser events agrees with the node-tree path it short-cuts.

``loading._load_events`` handles the usual (mappings, sequences, scalars, tags, ``${VAR}``)
and gives up (``_Fallback``) on the rest, which ``loading._load_nodes`` then loads. Giving
up is always safe; what must never happen is a fast answer that differs from the node path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import loading

ENVIRON = {"P": "s3cret", "N": "8", "EMPTY": ""}
PATH = Path("/manifests/f.yaml")

PIECES = [
    "apiVersion: converge/v1\n", "kind: RoleApp\n", "metadata:\n", "  name: app\n", "spec:\n",
    "  folder: f\n", "  roles: [a, b]\n", "  opts: {recv_timeout: 30, visible: true}\n",
    "- ", ": ", "? ", "{", "}", "[", "]", ", ", "'", '"', "#", "|\n", ">\n", "---\n", "...\n",
    "\n", "  ", "&a ", "*a", "<<: ", "!!python/object:os.system ", "!!binary ", "!custom ",
    "!!int ", "!!str ", "!!float ", "!!bool ", "!!null ", "! ", "%YAML 1.1\n", "${P}",
    "${UNSET}", "$${", "${N:-8}", "${EMPTY}", "0x1F", "0o17", "1_000", "1e999", ".nan", "-.inf",
    "~", "yes", "No", "on", "2024-01-01", "12:30:00", "é", "😀", "9" * 40, "x: 1\nx: 2\n",
]  # fmt: skip
yaml_ish = st.lists(st.sampled_from(PIECES), max_size=50).map("".join)

scalar_texts = st.sampled_from(
    ["x", "", "~", "null", "true", "False", "yes", "off", "0", "-1", "0x1F", "1.5", ".inf",
     ".NaN", "1e3", "2024-01-01", "=", "<<x", "${P}", "${UNSET}", "${N:-8}", "pre-${P}-post",
     "$${P}", "'quoted'", '"dq"', "!!str 8", "!!int 8", "!!float 1", "!custom x", "! 12",
     "|\n  block\n", ">-\n  folded\n", "АРМ оператора"]
)  # fmt: skip
keys = st.sampled_from(["a", "b", "spec", "1", "true", "null", "~", "'q'", "k-${P}", "é"])


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return json.dumps(value) if "\n" in value or value.startswith(("|", ">")) else value


def _block(value: Any, indent: int) -> str:
    pad = " " * indent
    if isinstance(value, dict) and value:
        return "".join(
            f"{pad}{k}:\n{_block(v, indent + 2)}"
            if isinstance(v, dict | list) and v
            else f"{pad}{k}: {_flow(v) if isinstance(v, dict | list) else _scalar(v, indent + 2)}\n"
            for k, v in value.items()
        )
    if isinstance(value, list) and value:
        return "".join(f"{pad}- {_flow(item)}\n" for item in value)
    return f"{pad}{_flow(value)}\n"


def _scalar(text: str, indent: int) -> str:
    if text.startswith(("|", ">")):  # a block scalar: its body indented under the key
        head, body = text.split("\n", 1)
        return head + "\n" + "".join(" " * indent + line + "\n" for line in body.splitlines())
    return text


trees = st.recursive(
    scalar_texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)
documents = st.lists(
    st.tuples(trees, st.booleans()).map(lambda t: _block(t[0], 0) if t[1] else _flow(t[0]) + "\n"),
    min_size=1,
    max_size=4,
).map("---\n".join)


def _summary(documents: list[loading.Document], problems: list[Any]) -> str:
    # repr, not ==: NaN is never equal to itself, and dict order matters here.
    return repr(
        (
            [
                (d.file, d.path, d.index, d.line, d.data, d.lines, d.from_env, d.unset)
                for d in documents
            ],
            problems,
        )
    )


def _agrees(text: str) -> bool:
    """Whether the fast path answered (and so was compared); False when it gave up."""
    try:
        fast = loading._load_events(text, "f.yaml", PATH, ENVIRON)
    except loading._Fallback:
        return False
    slow = loading._load_nodes(text, "f.yaml", PATH, ENVIRON)
    assert _summary(*fast) == _summary(*slow)
    return True


FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(text=documents)
def test_structured_documents_agree(text: str) -> None:
    _agrees(text)


@FAST
@given(text=yaml_ish | st.text(max_size=200))
def test_arbitrary_text_agrees(text: str) -> None:
    _agrees(text)


def test_ordinary_manifests_take_the_fast_path() -> None:
    text = (Path(__file__).parents[2] / "examples" / "manifests" / "roleapps.yaml").read_text()
    assert _agrees(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",  # anchors and aliases
        "a: {x: 1}\n<<: {y: 2}\n",  # a merge key
        "a: 1\na: 2\n",  # a duplicate key
        "? [a]\n: 1\n",  # a collection as a key
        "a: [1\n",  # a syntax error
        "[" * 40 + "]" * 40 + "\n",  # deep nesting
    ],
)
def test_the_unusual_is_left_to_the_node_path(text: str) -> None:
    with pytest.raises(loading._Fallback):
        loading._load_events(text, "f.yaml", PATH, ENVIRON)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: [!!int abc]\n", "invalid YAML: 'abc' is not a valid !!int"),
        ("a: 1\nb: [!!int ]\n", "invalid YAML: '' is not a valid !!int"),
        ("a: 1\nb: [!!bool maybe]\n", "invalid YAML: 'maybe' is not a valid !!bool"),
        (
            "a: 1\nb: [" + "9" * 5000 + "]\n",
            "invalid YAML: '" + "9" * 37 + "...' is not a valid !!int",
        ),
    ],
)
def test_a_value_its_tag_cannot_hold_is_a_problem_not_a_crash(text: str, message: str) -> None:
    for load in (loading._load_events, loading._load_nodes):
        _, problems = load(text, "f.yaml", PATH, ENVIRON)
        assert [(p.line, p.key, p.message) for p in problems] == [(2, "b[0]", message)]
