"""YAML texts for the loading tests: pieces to shuffle, and documents built from trees.

Shared by test_loading_fast.py (libyaml events) and test_yaml_lines.py (the line reader):
both compare a fast path with the node-tree path on the same kinds of text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from controller import loading

ENVIRON = {"P": "s3cret", "N": "8", "EMPTY": ""}
PATH = Path("/manifests/f.yaml")
Load = Callable[[str, str, Path, dict[str, str]], tuple[list[loading.Document], list[Any]]]

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


def summary(documents: list[loading.Document], problems: list[Any]) -> str:
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


def agrees(fast: Load, gives_up: type[Exception], text: str) -> bool:
    """Whether ``fast`` answered (and so was compared with the node path); False: it gave up."""
    try:
        answer = fast(text, "f.yaml", PATH, ENVIRON)
    except gives_up:
        return False
    assert summary(*answer) == summary(*loading._load_nodes(text, "f.yaml", PATH, ENVIRON))
    return True
