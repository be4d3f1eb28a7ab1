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


@pytest.mark.parametrize("kind", list(Kind))
@settings(max_examples=100)
@given(document=json_values)
def test_arbitrary_values_are_never_vouched_for_wrongly(kind: Kind, document: Any) -> None:
    _agrees(kind, document)


def test_unknown_keywords_mean_no_fast_path() -> None:
    check = prechecks.compile_schema({"type": "object", "oneOf": [{"required": ["a"]}]})
    assert not check({"a": 1})
    assert prechecks.compile_schema({"type": "string", "title": "t"})("x")


VALID_CONNECTIONS: list[dict[str, Any]] = [
    {
        "apiVersion": "converge/v1",
        "kind": "Connection",
        "metadata": {"name": "era-main"},
        "spec": {
            "api": "era",
            "url": "https://era.example.com",
            "auth": {"domain": "d", "login": "l", "password": "p"},
            "timeout": "30s",
            "concurrency": 8,
        },
    },
    {
        "apiVersion": "converge/v1",
        "kind": "Connection",
        "metadata": {"name": "element-main"},
        "spec": {
            "api": "element",
            "url": "sandbox",
            "auth": {"clientId": "c", "clientSecret": "s"},
        },
    },
    {
        "apiVersion": "converge/v1",
        "kind": "Connection",
        "metadata": {"name": "vcda-main"},
        "spec": {
            "api": "vcda",
            "url": "u",
            "auth": {"type": "localUser", "user": "u", "password": "p"},
        },
    },
    {
        "apiVersion": "converge/v1",
        "kind": "Connection",
        "metadata": {"name": "commvault-main"},
        "spec": {"api": "commvault", "url": "u", "auth": {"token": "t"}},
    },
]
CONNECTION_PATHS = [
    ("spec", "api"),
    ("spec", "url"),
    ("spec", "auth"),
    ("spec", "auth", "domain"),
    ("spec", "auth", "password"),
    ("spec", "auth", "clientSecret"),
    ("spec", "auth", "type"),
    ("spec", "auth", "token"),
    ("spec", "auth", "username"),
    ("spec", "auth", "user"),
    ("spec", "timeout"),
    ("spec", "concurrency"),
]
connection_values = json_values | st.sampled_from(
    ["era", "element", "vcda", "commvault", "localUser", "30s", 0, 8, 1.0, True]
)


def test_valid_connections_take_the_fast_path() -> None:
    # Every real estate declares connections: if they missed the fast path, every command
    # would import jsonschema for nothing.
    for connection in VALID_CONNECTIONS:
        assert validating._precheck(Kind.CONNECTION)(connection), connection["metadata"]


VALID_POLICY: dict[str, Any] = {
    "apiVersion": "converge/v1",
    "kind": "BackupPolicy",
    "metadata": {"name": "element-nightly"},
    "spec": {
        "connection": "element-main",
        "maxAge": "26h",
        "source": {"elementApplication": {"applicationId": "5c1b0c4e-2d5e-4a53-9d2b-2f3f1d1d1d1d"}},
    },
}
POLICY_PATHS = [
    ("spec", "source"),
    ("spec", "source", "vcdaAppliance"),
    ("spec", "source", "commvaultDynamoDB"),
    ("spec", "source", "elementApplication"),
    ("spec", "maxAge"),
    ("spec", "connection"),
]


def test_a_valid_policy_takes_the_fast_path() -> None:
    assert validating._precheck(Kind.BACKUP_POLICY)(VALID_POLICY)


@pytest.mark.parametrize(
    ("kind", "bases", "paths", "values"),
    [
        (Kind.ROLEAPP, [VALID_ROLEAPP], PATHS, json_values),
        (Kind.CONNECTION, VALID_CONNECTIONS, CONNECTION_PATHS, connection_values),
        (Kind.BACKUP_POLICY, [VALID_POLICY], POLICY_PATHS, json_values),
    ],
)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_documents_are_never_vouched_for_wrongly(
    kind: Kind,
    bases: list[dict[str, Any]],
    paths: list[tuple[Any, ...]],
    values: st.SearchStrategy[Any],
    data: st.DataObject,
) -> None:
    document: Any = copy.deepcopy(data.draw(st.sampled_from(bases)))
    edits = data.draw(
        st.lists(
            st.tuples(st.sampled_from(paths), st.one_of(st.just(KeyError), values)),
            min_size=1,
            max_size=3,
        )
    )
    for path, value in edits:
        _set(document, path, value)
    _agrees(kind, document)


@pytest.mark.parametrize(
    ("schema", "value", "vouched"),
    [
        (
            {
                "if": {"properties": {"a": {"const": "x"}}, "required": ["a"]},
                "then": {"required": ["b"]},
            },
            {"a": "x", "b": 1},
            True,
        ),
        (
            {
                "if": {"properties": {"a": {"const": "x"}}, "required": ["a"]},
                "then": {"required": ["b"]},
            },
            {"a": "x"},
            False,
        ),
        (
            {
                "if": {"properties": {"a": {"const": "x"}}, "required": ["a"]},
                "then": {"required": ["b"]},
            },
            {"a": "y"},
            True,
        ),
        (
            {"if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}},
            {"a": 1, "b": 1},
            False,
        ),
        ({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"b": 1}, True),
        ({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"c": 1}, False),
        ({"allOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"a": 1}, False),
        ({"maxProperties": 1}, {"a": 1, "b": 2}, False),
    ],
)
def test_combinators(schema: dict[str, Any], value: Any, vouched: bool) -> None:
    assert prechecks.compile_schema(schema)(value) is vouched


# Arbitrary small schemas made of the keywords prechecks handles, against jsonschema: the
# shortcuts that skip a node's separate type check (a lone type checked by its keywords)
# and the one-value const must keep every True true.
KEYS = ["a", "b"]
leaf_values = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-3, max_value=3)
    | st.sampled_from(["", "a", "ab", "b", "B"])
)
schema_values = st.recursive(
    leaf_values,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=2)
    ),
    max_leaves=6,
)
type_names = st.sampled_from(["object", "array", "string", "integer", "number", "boolean", "null"])


def _schemas(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    keywords: dict[str, st.SearchStrategy[Any]] = {
        "type": type_names | st.lists(type_names, min_size=1, max_size=2, unique=True),
        "const": leaf_values,
        "enum": st.lists(leaf_values, min_size=1, max_size=3),
        "pattern": st.sampled_from(["^a", "b$", "^[a-z]+$"]),
        "minLength": st.integers(0, 2),
        "minimum": st.integers(-1, 1),
        "maximum": st.integers(-1, 1),
        "required": st.lists(st.sampled_from(KEYS), max_size=2, unique=True),
        "properties": st.dictionaries(st.sampled_from(KEYS), children, max_size=2),
        "additionalProperties": st.booleans() | children,
        "minProperties": st.integers(0, 2),
        "items": children,
        "uniqueItems": st.booleans(),
        "not": st.fixed_dictionaries(
            {"required": st.lists(st.sampled_from(KEYS), max_size=2, unique=True)}
        ),
        "anyOf": st.lists(children, min_size=1, max_size=2),
    }
    # A few keywords at a time: schemas with many are rarely satisfiable, and a True is what
    # this test needs to see often.
    chosen = st.lists(st.sampled_from(sorted(keywords)), max_size=3, unique=True)
    return chosen.flatmap(lambda names: st.fixed_dictionaries({n: keywords[n] for n in names}))


schemas = st.recursive(st.booleans() | _schemas(st.just(True)), _schemas, max_leaves=4)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, value=schema_values)
def test_arbitrary_schemas_are_never_vouched_for_wrongly(schema: Any, value: Any) -> None:
    import jsonschema

    if prechecks.compile_schema(schema)(value):
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(value)]
        assert not errors, f"precheck vouched for an invalid value: {errors}"
