"""Property: whatever the input, ``validate`` answers OK or lists problems — nothing else.

Every generated input, written to a fresh folder, must end in exit 0, or exit 1 with every
stderr line ``FILE[:LINE]: ...``; ``validating.validate`` raises nothing but ManifestError;
no network connection is opened (the folder's conftest fails the test on connect); no file
appears beside the input. Two sources of input: arbitrary text and bytes (some YAML-ish),
and valid manifests mutated (keys dropped, types changed, odd unicode, deep nesting, huge
numbers, anchors, aliases, ``<<`` merges, tags such as ``!!python/object``).

Deterministic by default (the ``converge-fuzz-ci`` profile, derandomized, no example
database); ``CONVERGE_FUZZ_PROFILE=converge-fuzz-dev`` explores with fresh randomness.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, composite
from runs import run_cli

from controller import validating
from controller.errors import ManifestError

settings.register_profile("converge-fuzz-ci", derandomize=True, database=None)
settings.register_profile("converge-fuzz-dev", derandomize=False)
PROFILE = settings.get_profile(os.environ.get("CONVERGE_FUZZ_PROFILE", "converge-fuzz-ci"))
# Why suppress: the autouse no-network patch is function-scoped on purpose; it holds for
# every example, which is what we want, and nothing in it needs resetting between them.
FUZZ = settings(
    PROFILE,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ENVIRON = {"P": "s3cret", "N": "8"}
LINE = re.compile(r"^[^:]+(:\d+)?: .+")


# ── inputs: text ───────────────────────────────────────────────────────────────────────
YAML_PIECES = [
    "apiVersion: converge/v1\n", "kind: RoleApp\n", "kind: Connection\n", "kind: BackupPolicy\n",
    "metadata:\n", "  name: app\n", "spec:\n", "  folder: f\n", "  api: era\n", "  url: sandbox\n",
    "- ", ": ", "? ", "{", "}", "[", "]", ", ", "'", '"', "#", "|\n", ">\n", "---\n", "...\n",
    "\n", "  ", "\t", "&a ", "*a", "*b", "<<: ", "!!python/object:os.system ", "!!binary ",
    "!custom ", "%YAML 1.1\n", "%TAG ! tag:example.com,2000:\n", "${P}", "${UNSET}", "$${",
    "${N:-8}", "0x1F", "1e999", ".nan", "-.inf", "~", "yes", "2024-01-01", "\x85", "\u2028",
    "\ufeff", "é", "😀", "\x00", "\x7f", "9" * 40,
]  # fmt: skip


yaml_ish = st.lists(st.sampled_from(YAML_PIECES), max_size=60).map("".join)
any_text = st.one_of(st.text(max_size=400), yaml_ish)
any_bytes = st.one_of(st.binary(max_size=400), yaml_ish.map(lambda t: t.encode("utf-8")))


# ── inputs: mutated manifests ──────────────────────────────────────────────────────────
class Raw(str):
    """YAML written as is: a tag, an alias, an anchored node, a deep nest."""


VALID: list[dict[str, Any]] = [
    {"apiVersion": "converge/v1", "kind": "Connection", "metadata": {"name": "era-main"},
     "spec": {"api": "era", "url": "sandbox", "timeout": "30s", "concurrency": 8}},
    {"apiVersion": "converge/v1", "kind": "Connection", "metadata": {"name": "era-prod"},
     "spec": {"api": "era", "url": "https://era.example",
              "auth": {"domain": "d", "login": "l", "password": "${P}"},
              "tls": {"verify": True}, "rateLimit": 5}},
    {"apiVersion": "converge/v1", "kind": "Connection", "metadata": {"name": "element-main"},
     "spec": {"api": "element", "url": "sandbox",
              "auth": {"clientId": "c", "clientSecret": "${UNSET_SECRET}"}}},
    {"apiVersion": "converge/v1", "kind": "Connection", "metadata": {"name": "vcda-main"},
     "spec": {"api": "vcda", "url": "sandbox"}},
    {"apiVersion": "converge/v1", "kind": "Connection", "metadata": {"name": "cv-main"},
     "spec": {"api": "commvault", "url": "sandbox", "auth": {"token": "${P}"}}},
    {"apiVersion": "converge/v1", "kind": "RoleApp",
     "metadata": {"name": "chat-operator", "labels": {"team": "support"}},
     "spec": {"connection": "era-main", "folder": "chat", "title": "АРМ оператора",
              "roles": ["chatagent"], "svcscriptcode": "chatagent_api",
              "opts": {"title": "", "recv_timeout": 30, "visible": True},
              "lifecycle": {"preventDestroy": False, "ignoreFields": ["opts.title"]}}},
    {"apiVersion": "converge/v1", "kind": "BackupPolicy", "metadata": {"name": "crm"},
     "spec": {"connection": "element-main", "schedule": "0 2 * * *",
              "timezone": "Europe/Moscow", "maxAge": "26h",
              "retention": {"keepLast": 7, "maxAge": "30d"}, "wait": "10m",
              "source": {"elementApplication": {
                  "applicationId": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
                  "includeUsers": True}}}},
    {"apiVersion": "converge/v1", "kind": "BackupPolicy", "metadata": {"name": "vcda"},
     "spec": {"maxAge": "7d", "source": {"vcdaAppliance": {"password": "${P}"}}}},
    {"apiVersion": "converge/v1", "kind": "BackupPolicy", "metadata": {"name": "orders"},
     "spec": {"connection": "cv-main", "schedule": "30 */6 * * *",
              "source": {"commvaultDynamoDB": {"clientName": "aws", "instanceName": "DynamoDB",
                                               "subclientId": 123}}}},
]  # fmt: skip

odd_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\u202e", "\u0000", "é\u0301", "😀", "${P}", "${UNSET}", "$${P}",
                     "${N:-8}", "a" * 300, "ROLE", "../../etc/passwd", "Europe", "0 0 31 2 *",
                     "0 0 * * * *", "null", "true", "1e999", "\n", "a: b", "- x"]),
)  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)
raws = st.one_of(
    st.sampled_from([
        "!!python/object:os.system x", "!!python/object/apply:os.system [ls]", "!!binary aGk=",
        "!!timestamp 2024-01-01", "!!set {a, b}", "!!omap [{a: 1}]", "!custom x", "*nowhere",
        "&a {x: 1}", "&b [1, 2]", "!!str 8", "!!int 8", "!!float 1", "!!null ''",
    ]),
    st.integers(min_value=1, max_value=300).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=100).map(lambda n: "{a: " * n + "1" + "}" * n),
).map(Raw)  # fmt: skip
values = st.recursive(
    st.one_of(scalars, raws),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*prefix, i))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@composite
def mutated_manifests(draw: DrawFn) -> str:
    docs = copy.deepcopy(draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=6)))
    anchored = False
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        doc_index = draw(st.integers(min_value=0, max_value=len(docs) - 1))
        path = draw(st.sampled_from(list(_paths(docs[doc_index]))))
        what = draw(st.sampled_from(["drop", "replace", "add", "merge", "anchor", "whole"]))
        if what == "whole" or not path:
            docs[doc_index] = draw(values)
            continue
        parent = _parent(docs[doc_index], path)
        if what == "drop":
            del parent[path[-1]]
        elif what == "replace":
            parent[path[-1]] = draw(values)
        elif what == "add" and isinstance(parent, dict):
            parent[draw(odd_text)] = draw(values)
        elif what == "merge" and isinstance(parent, dict):
            parent["<<"] = Raw("*m") if anchored else draw(values)
        elif what == "anchor" and isinstance(parent, dict):
            parent[path[-1]] = Raw("&m " + _flow(parent[path[-1]]))
            anchored = True  # later mutations may alias it
    return "---\n".join(_block(doc, 0) for doc in docs)


def _scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_./${}:-]*", value):
        return value if not value.endswith(":") and ": " not in value else json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else _scalar(value)


def _key(key: Any) -> str:
    return "<<" if key == "<<" else json.dumps(str(key), ensure_ascii=False)


def _block(value: Any, indent: int) -> str:
    pad = " " * indent
    if isinstance(value, dict) and value:
        out = ""
        for key, child in value.items():
            if isinstance(child, dict | list) and child:
                out += f"{pad}{_key(key)}:\n{_block(child, indent + 2)}"
            else:
                out += f"{pad}{_key(key)}: {_flow(child)}\n"
        return out
    if isinstance(value, list) and value:
        return "".join(f"{pad}- {_flow(item)}\n" for item in value)
    return f"{pad}{_flow(value)}\n"


# ── the property ───────────────────────────────────────────────────────────────────────
def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _check(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        root = Path(folder)
        target = root / "input.yaml"
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            validating.validate(["."], environ=ENVIRON)
        except ManifestError as exc:
            assert exc.problems
            for line in str(exc).splitlines():
                assert LINE.match(line), line
        outcome = run_cli(".", env=ENVIRON)
        assert "Traceback" not in outcome.stdout + outcome.stderr
        if outcome.exit_code == 0:
            assert outcome.stdout.startswith("OK: "), outcome
        else:
            assert outcome.exit_code == 1, outcome
            assert outcome.stdout == ""
            assert outcome.errors, outcome
            for line in outcome.errors:
                assert LINE.match(line), line
                assert "internal error" not in line, line
        assert _tree(root) == {"input.yaml"}


@given(any_text)
@FUZZ
def test_any_text(text: str) -> None:
    _check(text)


@given(any_bytes)
@FUZZ
def test_any_bytes(data: bytes) -> None:
    _check(data)


@given(mutated_manifests())
@FUZZ
def test_mutated_manifests(text: str) -> None:
    _check(text)
