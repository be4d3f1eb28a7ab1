"""The line reader (``controller.yaml_lines``) agrees with the node-tree path wherever it answers.

It reads plain block YAML and gives up (``Unsupported``) on everything else, which libyaml
then reads. Giving up is always safe; a different answer never is. The texts here lean on
what the reader does accept (indentation, same-indent sequences, sequences of mappings,
one-line flow collections, quotes, comments, empty documents) mixed with what it must not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yaml_texts import ENVIRON, PATH, agrees, documents, summary, yaml_ish

from controller import loading, yaml_lines

EXAMPLES = Path(__file__).parents[2] / "examples" / "manifests"

LINES = [
    "a: 1\n", "b: x\n", "  c: y\n", "    d: z\n", "- e\n", "  - f\n", "- g: h\n", "  i: j\n",
    "    - k\n", "k.l/m-n: o\n", "p:\n", "q: [r, s]\n", "t: {u: v, w: [x, {y: z}]}\n",
    "u: {}\n", "v: []\n", "w: [ a ,b ]\n", "x: 'it''s # not'\n", 'y: "dq # not"\n',
    "z: v # note\n", "# note\n", "  # indented note\n", "\n", "   \n", "---\n", "--- \n",
    "url: http://h:8/p?q=1#f\n", "bad: a: b\n", "n: -5\n", "s: - x\n", "-\n", "- - x\n",
    "e: ''\n", 'e: ""\n', "m: {a: 1, a: 2}\n", "dup: 1\n", "dup: 2\n", "f: [a, b,]\n",
    "g: {a: b\n", "h: ${P}\n", "h2: '${UNSET}'\n", "h3: pre-${N:-8}\n", "h4: ${N:-8}\n",
    "i: ~\n", "j: yes\n", "k: 0x1F\n", "l: .inf\n", "m: 2024-01-01\n", "n: 1e3\n",
    "o: -\n", "p: [-a, b c, 'q r']\n", "q: {a: 'b', c: \"d\"}\n", "r: é\n", "s: АРМ 1\n",
    "t: a#b\n", "u: a #b\n", "v: x:\n", "w: [a:b]\n", "x: [a # b]\n", "y: {a: b} # c\n",
    "z: {a: b}#c\n", "a1: 'x'y\n", "b1: [[a], [b, [c]]]\n", "c1: ? x\n", "? d1\n",
    "e1: &x 1\n", "f1: *x\n", "g1: !!str 1\n", "h1: |\n", "  block\n", "<<: {a: 1}\n",
    "i1: \"a\\tb\"\n", "j1: x\n  continued\n", "k1: [a,\n  b]\n", "...\n", "%YAML 1.1\n",
    "l1:\t1\n", "m1: 1\r\n", "  n1: 1\n", "o1: {a: [b, {c: d}], e: f}\n", "p1: [{}, []]\n",
    "q1: 1_000\n", "r1: =\n", "s1: -.5\n", "t1: +1\n", "u1: 'a\n", "v1: \"\n",
    "w1: 'q' # n\r\n", "x1: [a, {b: c}]\r\n", "- y1\r\n", "---\r\n", "\r\n", "z1: a\rb\n",
    "\r", "a2: 'b\rc'\n", "b2: 1\r\r\n",
]  # fmt: skip
block_ish = st.lists(st.sampled_from(LINES), max_size=14).map("".join)

SCALARS = [
    "x", "1", "-5", "+1", "true", "yes", "Off", "~", "null", "1.5", ".inf", "0x1F", "1_000",
    "2024-01-01", "12:30:00", "a b", "http://h:8/p", "a#b", "АРМ 1", "😀", "${P}", "${UNSET}",
    "${N:-8}", "pre-${P}", "$${P}", "'q'", '"dq"', "'it''s'", "'a # b'", '"${P}"', "=", "-x",
    "x:y", "''", '""', "'${N:-8}'",
]  # fmt: skip
KEYS = ["a", "b", "spec", "1", "true", "null", "k.l/m-n", "a_b", "0x1F"]
trees = st.recursive(
    st.sampled_from(SCALARS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=12,
)


def _flow(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


@st.composite
def _block(draw: st.DrawFn, value: object, indent: int, *, same: bool = False) -> str:
    """``value`` in block style, each collection as a block or in flow style at random."""
    pad = " " * indent
    note = draw(st.sampled_from(["", "", " # note"]))
    if isinstance(value, dict) and value:
        out = ""
        for key, item in value.items():
            if isinstance(item, dict | list) and item and not draw(st.booleans()):
                same_indent = isinstance(item, list) and draw(st.booleans())
                deeper = indent if same_indent else indent + draw(st.sampled_from([1, 2, 4]))
                out += f"{pad}{key}:{note}\n" + draw(_block(item, deeper, same=same_indent))
            else:
                out += f"{pad}{key}: {_flow(item)}{note}\n"
        return out
    if isinstance(value, list) and value:
        out = ""
        for item in value:
            if isinstance(item, dict) and item and draw(st.booleans()):
                inner = draw(_block(item, indent + 2))
                out += f"{pad}- " + inner[indent + 2 :]  # the first key on the dash's line
            else:
                out += f"{pad}- {_flow(item)}{note}\n"
        return out
    return f"{pad}{_flow(value)}\n"


spaces = st.sampled_from(["", " ", "  "])
flow_scalars = st.sampled_from(["a", "b c", "1", "true", "~", "-x", "x#y", "a:b", "${P}", "'q'"])


@st.composite
def _flow_collection(draw: st.DrawFn, inner: st.SearchStrategy[str]) -> str:
    """A flow collection of ``inner`` texts, spaced at random, now and then not valid."""
    if draw(st.booleans()):
        items = [draw(inner) for _ in range(draw(st.integers(0, 3)))]
        opening, closing = "[", "]"
    else:
        keys = draw(st.lists(st.sampled_from(KEYS), max_size=3))
        items = [f"{key}:{draw(st.sampled_from([' ', '  ', '']))}{draw(inner)}" for key in keys]
        opening, closing = "{", "}"
    text = ",".join(draw(spaces) + item + draw(spaces) for item in items)
    return opening + text + draw(st.sampled_from(["", "", "", ","])) + closing


flow_collections = st.recursive(flow_scalars, _flow_collection, max_leaves=10)


@st.composite
def block_documents(draw: st.DrawFn) -> str:
    root = st.dictionaries(st.sampled_from(KEYS), trees, min_size=1) | st.lists(trees, min_size=1)
    texts = [draw(_block(draw(root), 0)) for _ in range(draw(st.integers(1, 3)))]
    return ("---\n" if draw(st.booleans()) else "") + "---\n".join(texts)


SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _agrees(text: str) -> bool:
    return agrees(loading._load_lines, yaml_lines.Unsupported, text)


def _line_path(text: str) -> str:
    return summary(*loading._load_lines(text, "f.yaml", PATH, ENVIRON))


@SETTINGS
@given(text=block_ish)
@example("a:\n- x\n- y\nb: 1\n")
@example("- a:\n  - x\n  b: 1\n- c: 2\n")
@example("a: 1\n---\n")
@example("---\n---\na: 1\n")
@example("# only a note\n---\na: {b: [c, {d: e}]}\n")
def test_block_yaml_agrees(text: str) -> None:
    _agrees(text)


@SETTINGS
@given(text=block_documents())
def test_block_documents_agree(text: str) -> None:
    _agrees(text)


@SETTINGS
@given(text=documents)
def test_structured_documents_agree(text: str) -> None:
    _agrees(text)


@SETTINGS
@given(text=yaml_ish | st.text(max_size=200))
def test_arbitrary_text_agrees(text: str) -> None:
    _agrees(text)


@SETTINGS
@given(data=st.data())
def test_manifests_with_one_change_agree(data: st.DataObject) -> None:
    # Real manifests, one piece inserted anywhere: near-misses of the usual shape.
    text = (EXAMPLES / data.draw(st.sampled_from(["roleapps.yaml", "backups.yaml"]))).read_text()
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    piece = data.draw(st.sampled_from([*LINES, " ", "  ", ":", "-", "#", "'", "{", "]", ","]))
    _agrees(text[:at] + piece + text[at:])


@SETTINGS
@given(text=block_documents())
def test_documents_with_windows_line_ends_agree(text: str) -> None:
    crlf = text.replace("\n", "\r\n")
    if _agrees(text):
        assert _agrees(crlf)  # CR LF is taken wherever LF is


@SETTINGS
@given(value=flow_collections, note=st.sampled_from(["", " # note", "#x", " x"]))
@example(value="{name: a, labels: {b: c}, roles: [d, e]}", note="")
@example(value="[ {a: b} , [c] ,d ]", note=" # note")
def test_flow_collections_agree(value: str, note: str) -> None:
    _agrees(f"a: {value}{note}\nb:\n- {value}{note}\n")


@SETTINGS
@given(
    key=st.sampled_from(KEYS),
    text=st.text(alphabet=" :#-?'\"[]{},.~$aZé_1", max_size=10),
    ends=st.sampled_from(["", " ", "  "]),
)
@example(key="a", text="x y", ends=" ")
@example(key="a", text="1 # n", ends="")
def test_key_lines_agree(key: str, text: str, ends: str) -> None:
    # Most key lines take a one-regex shortcut in the reader; it must read them as the rest.
    _agrees(f"{key}: {text}{ends}\nb:\n  {key}:{text}{ends}\n  c: {text}\n")


@pytest.mark.parametrize("name", ["roleapps.yaml", "backups.yaml", "connections.yaml"])
def test_the_examples_take_the_line_path(name: str) -> None:
    assert _agrees((EXAMPLES / name).read_text())


@pytest.mark.parametrize("name", ["roleapps.yaml", "backups.yaml", "connections.yaml"])
def test_windows_line_ends_read_as_unix_ones(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    assert _agrees(text.replace("\n", "\r\n"))  # not left to libyaml
    assert _line_path(text.replace("\n", "\r\n")) == _line_path(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",  # anchors and aliases
        "a: {x: 1}\n<<: {y: 2}\n",  # a merge key
        "a: 1\na: 2\n",  # a duplicate key
        "a: {b: 1, b: 2}\n",  # a duplicate key in a flow mapping
        "? [a]\n: 1\n",  # a complex key
        "a: [1\n",  # not closed on its line
        "a: |\n  text\n",  # a block scalar
        "a: x\n  more\n",  # a plain scalar over two lines
        "a:\tb\n",  # a tab
        "a: 1\rb: 2\n",  # a CR alone: a line break of its own
        "a: 1\r\nb: 2\r",  # a CR alone at the end
        "a: 1\r\r\n",  # a CR before a CR LF
        "a: 'x\ry'\r\n",  # a CR in a quoted scalar: a line break folded into a space
        "a: !!int 1\n",  # a tag
        'a: "x\\ty"\n',  # an escape
        "  a: 1\n",  # a root not at column 0
        "--- {a: 1}\n",  # a document on the `---` line
        "a: " + "[" * 40 + "]" * 40 + "\n",  # deep nesting
    ],
)
def test_the_unusual_is_left_to_libyaml(text: str) -> None:
    with pytest.raises(yaml_lines.Unsupported):
        loading._load_lines(text, "f.yaml", PATH, ENVIRON)


def test_load_reads_a_file_the_line_reader_gives_up_on(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("a: &x {b: 1}\nc: *x\n")
    documents, problems = loading.load_file(manifest, environ=ENVIRON)
    assert problems == []
    assert [d.data for d in documents] == [{"a": {"b": 1}, "c": {"b": 1}}]


def test_text_it_refuses_is_what_libyaml_would_not_take_as_it_is() -> None:
    # YAML 1.1's printable set, minus tab, CR, NEL, U+2028/9 and a BOM past the start.
    printable = re.compile("[\n\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
    unusual = {"\u2028", "\u2029", "\ufeff"}
    for code in range(0x110000):
        char = chr(code)
        refused = yaml_lines._UNSUPPORTED_TEXT.search(char) is not None
        assert refused == (not printable.match(char) or char in unusual), hex(code)


def test_a_sequence_of_as_many_values_as_the_node_path_allows_is_left_to_it() -> None:
    # The root counts too: the node-tree path reports "more than 100000 values" here.
    text = "- x\n" * loading.MAX_VALUES
    with pytest.raises(yaml_lines.Unsupported):
        loading._load_lines(text, "f.yaml", PATH, ENVIRON)
    assert _agrees("- x\n" * (loading.MAX_VALUES - 1))


def test_lines_written_alike_give_each_document_its_own_containers() -> None:
    # A line is parsed once for all the lines written the same way; its values must not be.
    one = "a: [x, '${P}']\nb: {c: 1, d: [e]}\nf:\n- g: h\n"
    documents, _ = loading._load_lines(f"{one}---\n{one}", "f.yaml", PATH, ENVIRON)
    first, second = (document.data for document in documents)
    assert first == second == {"a": ["x", "s3cret"], "b": {"c": 1, "d": ["e"]}, "f": [{"g": "h"}]}
    assert first["a"] is not second["a"]
    assert first["b"] is not second["b"] and first["b"]["d"] is not second["b"]["d"]
    assert first["f"][0] is not second["f"][0]


@pytest.mark.parametrize("text", [*SCALARS, "", "0o17", "1e999", ".nan", "-.inf", "9" * 40])
def test_the_builder_gives_a_constant_for_the_text_alone(text: str) -> None:
    # The line reader reuses what Builder.scalar made of plain text when it is a number, a
    # boolean or None (yaml_lines.Builder): so it must record nothing, wherever it is.
    builders = [loading._Builder("f.yaml", ENVIRON) for _ in range(2)]
    values = [
        builder.scalar(None, text, yaml_lines._Source(None, line), ("a", line))
        for line, builder in enumerate(builders, 1)
    ]
    if "$" in text or type(values[0]) not in yaml_lines._CONSTANTS:
        return
    assert repr(values[0]) == repr(values[1])
    for builder in builders:
        recorded = (builder.problems, builder.from_env, builder.unset, builder.refused)
        assert recorded == ([], set(), {}, set())


def test_a_constant_repeated_across_documents_is_read_as_each_one() -> None:
    # Reused within a file; text that resolves with a problem is asked for each time.
    one = "a: 30\nb: [true, ~]\nc: .inf\nd: 2024-01-01\n"
    assert _agrees(f"{one}---\n{one}---\n{one}")
