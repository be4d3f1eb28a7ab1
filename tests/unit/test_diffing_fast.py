"""The unchanged-object shortcut in ``diffing`` never disagrees with the projections.

``diffing._unchanged`` may say "not proven" (False) freely; a True where the projections
differ would hide drift, so every True here is checked against ``_project`` itself, and
``diff`` as a whole against the projections-only path it short-cuts.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import diffing
from controller.manifests import Lifecycle, RoleApp, SourceLocation

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.floats(allow_nan=True, allow_infinity=False)
    | st.sampled_from(["", "1", "True", "a", "b", "chatagent", "supervisor"])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "attachment_info"]), children, max_size=3)
    ),
    max_leaves=6,
)
# Roles are where the projection does real work (a set sorted by str): mixed types, repeats,
# and values whose str() sorts apart from an equal value's (True and 1 around "5").
tricky = st.sampled_from([True, False, 0, 1, 2, 2.0, "5", "1", "True", "a"])
roles = st.lists(tricky, max_size=4) | st.lists(scalars, max_size=4) | values
opts = st.dictionaries(
    st.sampled_from(["visible", "recv_timeout", "comment", "attachment_info"]), values, max_size=4
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "folder": values,
        "title": values,
        "roles": roles,
        "svcscriptcode": values,
        "opts": opts | values,
        "id": values,
        "ext": values,
    },
)
PATHS = ["folder", "title", "roles", "opts", "id", "ext", "archive"]


@st.composite
def desired_and_live(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A manifest's fields and a live object that mostly matches them."""
    wanted = draw(fields)
    live = copy.deepcopy(wanted)
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(PATHS))
        if draw(st.booleans()):
            live.pop(key, None)
        elif key == "roles" and isinstance(live.get("roles"), list):
            shuffled = draw(st.permutations(live["roles"]))
            if draw(st.booleans()):  # equal, but not the same types: True == 1 == 1.0
                live["roles"] = [_retyped(role) for role in shuffled]
            else:
                live["roles"] = shuffled + draw(st.lists(scalars, max_size=1))
        elif key == "opts" and isinstance(live.get("opts"), dict):
            live["opts"] = {**live["opts"], **draw(opts)}
        else:
            live[key] = draw(roles if key == "roles" else values)
    return wanted, live


def _retyped(value: Any) -> Any:
    """An equal value of another type, where there is one."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return float(value) if value not in (0, 1) else bool(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


FAST = settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])


def _roleapp(wanted: dict[str, Any], ignore: tuple[str, ...] = ()) -> RoleApp:
    return RoleApp(
        name="app",
        connection="era-main",
        fields=wanted,
        lifecycle=Lifecycle(ignore_fields=ignore),
        source=SourceLocation("m.yaml", 1),
    )


def _projections_equal(wanted: dict[str, Any], live: dict[str, Any]) -> bool:
    return diffing._project(wanted, wanted, ()) == diffing._project(live, wanted, ())


@FAST
@given(pair=desired_and_live())
def test_unchanged_is_only_said_of_equal_projections(pair: tuple[dict, dict]) -> None:
    wanted, live = pair
    try:
        expected = _projections_equal(wanted, live)
    except TypeError:  # unhashable roles: the projection cannot be built either
        return
    if diffing._unchanged(wanted, live):
        assert expected


@FAST
@given(wanted=st.lists(tricky, max_size=4), data=st.data())
def test_roles_equal_in_another_order_or_type(wanted: list[Any], data: st.DataObject) -> None:
    live = [_retyped(role) for role in data.draw(st.permutations(wanted))]
    if diffing._unchanged({"roles": wanted}, {"roles": live}):
        assert _projections_equal({"roles": wanted}, {"roles": live})


def test_equal_lists_of_mixed_types_are_left_to_the_projection() -> None:
    # [True, "2"] == [1, "2"], yet the projection (a set sorted by str) tells them apart.
    wanted, live = {"roles": [True, "2"]}, {"roles": [1, "2"]}
    assert not _projections_equal(wanted, live)
    assert not diffing._unchanged(wanted, live)
    assert diffing.diff(_roleapp(wanted), live) != ()


def test_an_ordinary_unchanged_object_takes_the_shortcut() -> None:
    wanted = {
        "folder": "f",
        "title": "АРМ",
        "roles": ["chatagent", "supervisor"],
        "svcscriptcode": "s",
        "opts": {"visible": True, "recv_timeout": 30},
    }
    live = {
        **copy.deepcopy(wanted),
        "id": "x",
        "roles": ["supervisor", "chatagent"],
        "opts": {"visible": True, "recv_timeout": 30, "comment": "", "attachment_info": {}},
        "ext": {"lwt": "t"},
    }
    assert diffing._unchanged(wanted, live)
    assert diffing.diff(_roleapp(wanted), live) == ()
