"""Loading straight from parser events agrees with the node-tree path it short-cuts.

``loading._load_events`` handles the usual (mappings, sequences, scalars, tags, ``${VAR}``)
and gives up (``_Fallback``) on the rest, which ``loading._load_nodes`` then loads. Giving
up is always safe; what must never happen is a fast answer that differs from the node path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml_texts import ENVIRON, PATH, agrees, documents, yaml_ish

from controller import loading


def _agrees(text: str) -> bool:
    return agrees(loading._load_events, loading._Fallback, text)


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
