"""Bad input: manifests fuzzed with hypothesis and run through ``converge plan`` in-process.

Two generators: valid documents with one to three mutations (a value replaced by an odd
one, a key dropped or added), and YAML-ish text assembled from the pieces that break
parsers. Every input must end in exit 0, or exit 1 with every line a
``file:line: [key: ]message`` (or ``path: message`` when
there is nothing at all) — never a traceback or an internal error. An input that is
refused makes no network call (the emulator's request count does not move) and writes
nothing (no state file).
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import cli
from tests.reliability.conftest import APP_ID, SECRETS, Emulator

# FILE:LINE: [KEY: ]MESSAGE, or PATH: MESSAGE for a problem of the whole input (no manifests).
PROBLEM = re.compile(r"^/\S*?(\.ya?ml:[1-9]\d*|/manifests): \S.*$")
SETTINGS = settings(
    max_examples=100,
    derandomize=True,  # the same examples on every CI run
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

BASE_DOCS: list[dict[str, Any]] = [
    {
        "apiVersion": "converge/v1",
        "kind": "Connection",
        "metadata": {"name": "era-main"},
        "spec": {
            "api": "era",
            "url": "${ERA_URL}",
            "auth": {"domain": "rel.era", "login": "converge", "password": "${ERA_PASSWORD}"},
        },
    },
    {
        "apiVersion": "converge/v1",
        "kind": "Connection",
        "metadata": {"name": "element-main"},
        "spec": {
            "api": "element",
            "url": "${ELEMENT_URL}",
            "auth": {"clientId": "converge", "clientSecret": "${ELEMENT_CLIENT_SECRET}"},
        },
    },
    {
        "apiVersion": "converge/v1",
        "kind": "RoleApp",
        "metadata": {"name": "chat-operator", "labels": {"team": "support"}},
        "spec": {
            "folder": "chat-operator",
            "title": "Chat",
            "roles": ["chatagent"],
            "opts": {"recv_timeout": 30, "visible": True},
            "lifecycle": {"preventDestroy": False, "ignoreFields": ["opts.comment"]},
        },
    },
    {
        "apiVersion": "converge/v1",
        "kind": "BackupPolicy",
        "metadata": {"name": "crm-nightly"},
        "spec": {
            "connection": "element-main",
            "schedule": "0 2 * * *",
            "timezone": "Europe/Moscow",
            "maxAge": "26h",
            "retention": {"keepLast": 7, "maxAge": "30d"},
            "wait": "0s",
            "source": {"elementApplication": {"applicationId": APP_ID, "includeUsers": True}},
        },
    },
]
# Never mutated: a URL or a credential changed at random could send a request elsewhere.
FIXED = {("spec", "url"), ("spec", "auth")}

odd_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "${UNSET_VAR}", "$${", "${X:-}", "26x", "0 99 * * *", "Mars/Olympus"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            if (*prefix, key) not in FIXED and (prefix[-1:], key) != (("spec",), "url"):
                found += _paths(value, (*prefix, key))
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    docs = copy.deepcopy(BASE_DOCS)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        index = draw(st.integers(min_value=0, max_value=len(docs) - 1))
        paths = [p for p in _paths(docs[index]) if p not in FIXED]
        path = draw(st.sampled_from(paths))
        parent: Any = docs[index]
        for key in path[:-1]:
            parent = parent[key]
        how = draw(st.sampled_from(["replace", "drop", "add"]))
        if how == "replace":
            parent[path[-1]] = draw(odd_values)
        elif how == "drop":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.text(min_size=1, max_size=10))] = draw(odd_values)
    return yaml.safe_dump_all(docs, allow_unicode=True, sort_keys=False)


PIECES = [
    "apiVersion: converge/v1\n",
    "kind: RoleApp\n",
    "kind: Connection\n",
    "kind: BackupPolicy\n",
    "metadata: {name: a}\n",
    "metadata:\n  name: b\n",
    "spec:\n",
    "  folder: f\n",
    "  roles: [x]\n",
    "  connection: era-main\n",
    "---\n",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    "\t",
    "  ",
    "\n",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!python/object:os.system ",
    "!!binary ",
    "'",
    '"',
    "#",
    "${",
    "${ERA_PASSWORD}",
    "\x00",
    "\ufeff",
    "é",
    "? ",
    "| \n",
    "%YAML 1.1\n",
    "name",
    "1e9999",
]
yaml_text = st.lists(st.sampled_from(PIECES) | st.text(max_size=4), max_size=30).map("".join)


def plan_in_process(emulator: Emulator, text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifests = root / "manifests"
        manifests.mkdir()
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        (manifests / "fuzz.yaml").write_bytes(data)
        env = {**SECRETS, "NO_COLOR": "1"}
        env |= {f"{api.upper()}_URL": emulator.url(api) for api in ("era", "element")}
        state = root / ".converge" / "state.db"
        before = emulator.requests()

        result = CliRunner().invoke(
            cli.main, ["plan", str(manifests), "--state", f"sqlite:///{state}"], env=env
        )

        output = result.stdout + result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit), output
        assert "Traceback" not in output and "internal error" not in output, output
        assert result.exit_code in (0, 1), (result.exit_code, output)
        if result.exit_code == 1:
            lines = result.stderr.splitlines()
            assert lines and all(PROBLEM.match(line) for line in lines), result.stderr
            assert emulator.requests() == before, "a network call for invalid input"
            assert not state.exists(), "a state file written for invalid input"


@SETTINGS
@given(text=mutated_documents())
def test_mutated_manifests_plan_or_fail_with_located_problems(
    emulator: Emulator, text: str
) -> None:
    emulator.seed_sources()
    plan_in_process(emulator, text)


@SETTINGS
@given(text=yaml_text)
def test_yaml_text_plans_or_fails_with_located_problems(emulator: Emulator, text: str) -> None:
    plan_in_process(emulator, text)
