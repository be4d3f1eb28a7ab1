"""The schema precheck never vouches for a document jsonschema would reject.

``prechecks`` may say "unsure" (False) freely; a True where jsonschema finds an error would
let a bad manifest through, so every True here is checked against jsonschema itself.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import prechecks, validating
from controller.manifests import Kind

VALID_ROLEAPP: dict[str, Any] = {
    "apiVersion": "converge/v1",
    "kind": "RoleApp",
    "metadata": {"name": "chat-operator", "labels": {"team": "support"}},
    "spec": {
        "connection": "era-main",
        "id": "68f99ca9-016c-d352-e02f-50e54938780c",
        "folder": "chat-operator",
        "title": "АРМ оператора",
        "roles": ["chatagent", "supervisor"],
        "svcscriptcode": "chatagent_api",
        "opts": {"recv_timeout": 30, "visible": True},
        "archive": "apps/chat",
        "lifecycle": {"preventDestroy": True, "ignoreFields": ["opts.comment"]},
    },
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "x", "chat-operator", "Bad Name", "converge/v1", "RoleApp"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "folder", "attachment_info", "x", "required"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)
PATHS = [
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "labels"),
    ("metadata", "labels", "team"),
    ("metadata", "extra"),
    ("spec",),
    ("spec", "id"),
    ("spec", "folder"),
    ("spec", "title"),
    ("spec", "roles"),
    ("spec", "roles", 0),
    ("spec", "opts"),
    ("spec", "opts", "attachment_info"),
    ("spec", "lifecycle"),
    ("spec", "lifecycle", "ignoreFields"),
    ("spec", "lifecycle", "preventDestroy"),
    ("spec", "unknown"),
]


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    """Set (or, for KeyError, remove) ``path``; a path through a non-container is a no-op."""
    target = document
    for part in path[:-1]:
        if not isinstance(target, dict | list):
            return
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    if isinstance(target, dict):
        if value is KeyError:
            target.pop(last, None)
        else:
            target[last] = value
    elif isinstance(target, list) and isinstance(last, int) and last < len(target):
        target[last] = None if value is KeyError else value


def _agrees(kind: Kind, document: Any) -> None:
    fast = validating._precheck(kind)(document)
    if fast:
        errors = [e.message for e in validating._validator(kind).iter_errors(document)]
        assert not errors, f"precheck vouched for an invalid document: {errors}"


def test_a_valid_roleapp_takes_the_fast_path() -> None:
    assert validating._precheck(Kind.ROLEAPP)(VALID_ROLEAPP)
    minimal = {**VALID_ROLEAPP, "spec": {"folder": "x"}}
    assert validating._precheck(Kind.ROLEAPP)(minimal)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(PATHS), st.one_of(st.just(KeyError), json_values)),
        min_size=1,
        max_size=3,
    )
)
def test_mutated_roleapps_are_never_vouched_for_wrongly(edits: list[tuple[Any, Any]]) -> None:
    document: Any = copy.deepcopy(VALID_ROLEAPP)
    for path, value in edits:
        _set(document, path, value)
    _agrees(Kind.ROLEAPP, document)


@pytest.mark.parametrize("kind", list(Kind))
@settings(max_examples=100)
@given(document=json_values)
def test_arbitrary_values_are_never_vouched_for_wrongly(kind: Kind, document: Any) -> None:
    _agrees(kind, document)


def test_unknown_keywords_mean_no_fast_path() -> None:
    check = prechecks.compile_schema({"type": "object", "oneOf": [{"required": ["a"]}]})
    assert not check({"a": 1})
    assert prechecks.compile_schema({"type": "string", "title": "t"})("x")
