"""The quickest way to read a manifest: plain block YAML, line by line, with one regex each.

Called by ``loading`` before its libyaml paths. Why it exists: libyaml's C parser alone
spent 0.40 s producing the events of 10,000 manifests, and building documents from those
events another 0.5 s, the largest part of ``converge plan``. Manifests are written in a
small, regular part of YAML: block mappings and sequences, flow collections on one line,
plain and simply quoted scalars. Reading just that part with a regular expression per line
is cheaper; and as most lines of an estate are written alike (`kind: RoleApp`, `spec:`,
`  roles: [a]`, `  opts: {visible: true}`), each distinct line is parsed once per file into
a shape shared by the lines written the same way, from which each document's containers
are made afresh. Measured on 10,000 roleapp manifests (2.8 MB, a shared 2-core VM, medians
of alternated runs): ``read`` 0.47 s, where parsing every line of every document took
0.9 s; ``loading.load`` 0.5 s, against 0.93 s through libyaml's event path.

It reads only that part, with LF or CR LF line ends. Anything else raises
:class:`Unsupported` and ``loading`` reads the whole file through libyaml instead: tabs, a
CR without an LF after it, Unicode line breaks, directives, ``...``, block scalars, a plain
or quoted scalar or flow collection over more than one line, anchors, aliases, tags,
escapes in double quotes, complex, quoted, duplicate or merge keys, an empty ``-`` item, a
root that is not a block collection at column 0, unusual indentation, deep nesting, very
large documents, and anything that is not valid YAML. So this reader never has to be right
about the unusual; it only has to agree on the usual, which tests/unit/test_yaml_lines.py
checks against the node-tree path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from typing import Any, Protocol, TypeVar

__all__ = ["Unsupported", "read"]

# Beyond these a document goes to libyaml, whose paths know the exact limits and words.
MAX_DEPTH = 32
MAX_VALUES = 100_000

KeyPath = tuple[str | int, ...]


class Unsupported(Exception):
    """The text uses YAML this reader leaves to libyaml (or is not valid YAML)."""


class Builder(Protocol):
    """What a document is built into: ``loading._Builder``.

    ``scalar`` of plain text without ``$`` that gives a number, a boolean or None must give
    it for that text alone, recording nothing: the reader reuses it for the same text.
    """

    lines: dict[KeyPath, int]

    def scalar(self, tag: str | None, value: str, source: Any, path: KeyPath) -> Any: ...


# The caller's own builder type, handed back with each document (loading reads its problems).
_BuilderT = TypeVar("_BuilderT", bound=Builder)


class _Source:
    """What ``Builder.scalar`` reads of a scalar event: its style, plainness and line."""

    __slots__ = ("implicit", "line", "style")

    def __init__(self, style: str | None, line: int) -> None:
        self.style = style
        self.implicit = (style is None, style is not None)
        self.line = line - 1  # a mark's line is 0-based

    @property
    def start_mark(self) -> _Source:
        return self


# What libyaml does not take as it is: control characters but newline, the surrogates and
# non-characters, and tab, CR, NEL, the Unicode line and paragraph separators and a BOM
# past the start, whose rules the reader would have to know. Written as the characters to
# find, not the ones allowed: the regex engine scans for these ~3x faster.
_UNSUPPORTED_TEXT = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]"
)
# A block mapping key: plain, simple, followed by ":" and a space or the end of the line.
_KEY_TEXT = r"[A-Za-z0-9_][A-Za-z0-9_./-]*"
_KEY = re.compile(rf"({_KEY_TEXT}):(?: +(.*))?$")
# Most lines: `key:`, or `key: text` whose text starts with a letter or digit and holds no
# ":" or "#" (so no note, no mapping, nothing that is not a plain scalar).
_SIMPLE_LINE = re.compile(rf"( *)({_KEY_TEXT}):(?: +(\w(?:[^:#]*[^:# ])?))? *$")
_FLOW_KEY = re.compile(rf"({_KEY_TEXT}): +")
_DOUBLE = re.compile(r'"([^"\\]*)"')
_SINGLE = re.compile(r"'((?:[^']|'')*)'")
# A plain scalar inside a flow collection: no flow indicators, no ":" or "#" or "?" at all.
_PLAIN_IN_FLOW = r"(?:[^\s,\[\]{}#&*!|>'\"%@`?:-]|-[^\s,\[\]{}#:?])[^,\[\]{}#:?]*"
_FLOW_PLAIN = re.compile(_PLAIN_IN_FLOW)
# A flow collection of plain scalars only, nothing nested: most of them (`roles: [a, b]`,
# `opts: {visible: true}`). Split at "," and ": " once matched, as no value holds either.
_FLAT_SEQUENCE_TEXT = rf"\[ *(?:{_PLAIN_IN_FLOW}(?:, *{_PLAIN_IN_FLOW})*)?\]"
_FLAT_MAPPING_TEXT = (
    rf"\{{ *(?:{_KEY_TEXT}: +{_PLAIN_IN_FLOW}(?:, *{_KEY_TEXT}: +{_PLAIN_IN_FLOW})*)?\}}"
)
_FLAT_SEQUENCE = re.compile(_FLAT_SEQUENCE_TEXT)
_FLAT_MAPPING = re.compile(_FLAT_MAPPING_TEXT)
# One level more: plain scalars and flat collections (`metadata: {name: a, labels: {b: c}}`,
# on a line of its own in each document). Its items are then found one regex match each.
_SHALLOW_VALUE = rf"(?:{_PLAIN_IN_FLOW}|{_FLAT_SEQUENCE_TEXT} *|{_FLAT_MAPPING_TEXT} *)"
_SHALLOW_SEQUENCE = re.compile(rf"\[ *(?:{_SHALLOW_VALUE}(?:, *{_SHALLOW_VALUE})*)?\]")
_SHALLOW_MAPPING = re.compile(
    rf"\{{ *(?:{_KEY_TEXT}: +{_SHALLOW_VALUE}(?:, *{_KEY_TEXT}: +{_SHALLOW_VALUE})*)?\}}"
)
_SHALLOW_ITEM_TEXT = rf"({_FLAT_SEQUENCE_TEXT})|({_FLAT_MAPPING_TEXT})|({_PLAIN_IN_FLOW})"
_SHALLOW_ITEM = re.compile(rf"()(?:{_SHALLOW_ITEM_TEXT})")
_SHALLOW_PAIR = re.compile(rf"({_KEY_TEXT}): +(?:{_SHALLOW_ITEM_TEXT})")
_SPACES = re.compile(" *")
# First characters that never start a plain scalar in a block (``-``, ``?`` and ``:`` only
# when a space or the end of the line follows them).
_NOT_PLAIN = frozenset(",[]{}#&*!|>'\"%@`")


def read(
    text: str, new_builder: Callable[[], _BuilderT], may_resolve: Container[str]
) -> list[tuple[int, int, Any, _BuilderT]]:
    """(index, line, data, builder) of each document of ``text``; data None when empty."""
    if "\r" in text:
        text = _without_crlf(text)
    if _UNSUPPORTED_TEXT.search(text):
        raise Unsupported
    documents: list[tuple[int, int, Any, _BuilderT]] = []
    null = (_RESOLVE, "") if "" in may_resolve else (_TEXT, "")
    resolved: dict[str, Any] = {}
    for index, (shapes, numbers) in enumerate(_documents(text, may_resolve)):
        builder = new_builder()
        if not shapes:  # `---` with nothing under it: an empty document
            documents.append((index, 0, None, builder))
            continue
        if shapes[0][0]:
            raise Unsupported
        shapes.append(_END)
        reader = _Reader(shapes, numbers, builder, null, resolved)
        data, end = reader.block(0, 0, (), 0)
        if end != len(numbers):
            raise Unsupported  # a line left over: indented oddly, or not YAML
        # Counted once here rather than at each key: every value has a line, and a key
        # counts as one more, as does the root.
        if len(builder.lines) + reader.keys + 1 > MAX_VALUES:
            raise Unsupported
        documents.append((index, numbers[0], data, builder))
    return documents


def _without_crlf(text: str) -> str:
    """``text`` with Windows line ends (CR LF) made LF; Unsupported if any CR stands alone.

    libyaml reads CR LF as one line break, and so as LF: in a line number, and in the one
    place a break could be part of a value, a scalar over more than one line, which this
    reader refuses anyway. A CR alone is a line break of its own too, rare enough to leave
    to libyaml.
    """
    if text.count("\r") != text.count("\r\n"):
        raise Unsupported
    return text.replace("\r\n", "\n")


# What a line says, parsed once for all the lines written the same way (most of a manifest:
# `kind: RoleApp`, `spec:`, `  roles: [a]`) and shared: only immutable parts, the containers
# are made afresh for each document. A shape is (indent, key, kind, payload):
#   key line    `key: value`  (indent, key, _BELOW or a value's kind, payload)
#   item line   `- value`     (indent, None, _ITEM, the shape of `value` at its own column)
#   value       `value`       (column, None, _TEXT | _RESOLVE | _SCALAR | _FLOW, payload)
# Payloads: _BELOW None (the value is on the lines below, or null); _TEXT the value itself
# (text with nothing to resolve or expand); _RESOLVE plain text, no ${...}, that may resolve
# (see _Reader.resolve); _SCALAR (text, style) for ``Builder.scalar`` each time; _FLOW a
# flow collection's template.
# A template is (nesting, keys, items, is_mapping): items are (key, kind, payload) in a
# mapping, (kind, payload) in a sequence; nesting: how many flow levels; keys: how many
# mapping keys it holds in all.
Shape = tuple[int, str | None, int, Any]
Template = tuple[int, int, tuple[Any, ...], bool]
_BELOW, _TEXT, _RESOLVE, _SCALAR, _FLOW, _ITEM, _EOF = range(7)
_UNRESOLVED = object()
# What Builder.scalar makes of plain text that the reader may reuse (see Builder): most
# resolved scalars (`visible: true`, `recv_timeout: 30`) repeat across documents.
_CONSTANTS = frozenset({int, float, bool, type(None)})
_END: Shape = (-1, None, _EOF, None)  # after a document's last line: closes every block
_SKIP: Shape = (-2, None, _EOF, None)  # a blank or comment line
_MARK: Shape = (-3, None, _EOF, None)  # `---`


def _documents(text: str, may_resolve: Container[str]) -> list[tuple[list[Shape], list[int]]]:
    """The shapes of each document's content lines, and their 1-based line numbers."""
    documents: list[tuple[list[Shape], list[int]]] = []
    shapes: list[Shape] = []
    numbers: list[int] = []
    explicit = False  # whether the current document began with `---`
    known: dict[str, Shape] = {}
    for number, line in enumerate(text.split("\n"), 1):
        shape = known.get(line)
        if shape is None:
            # Shaping a line before its document is read is no change: a document reads
            # every line of it, and any line Unsupported makes the whole file so.
            shape = known[line] = _shape(line, may_resolve)
        if shape is _SKIP:
            continue
        if shape is _MARK:
            if shapes or explicit:
                documents.append((shapes, numbers))
            shapes, numbers, explicit = [], [], True
            continue
        shapes.append(shape)
        numbers.append(number)
    if shapes or explicit:
        documents.append((shapes, numbers))
    return documents


def _shape(line: str, may_resolve: Container[str]) -> Shape:
    simple = _SIMPLE_LINE.match(line)
    if simple is not None:  # one match instead of the steps below, which agree with it
        spaces, key, text = simple.groups()
        if text is None:
            return (len(spaces), key, _BELOW, None)
        return (len(spaces), key, *_plain(text, may_resolve))
    content = line.lstrip(" ")
    if not content or content[0] == "#":
        return _SKIP
    if line.startswith(("---", "...", "%")):
        if line.rstrip(" ") != "---":
            raise Unsupported  # `--- value`, `...`, a directive
        return _MARK
    indent = len(line) - len(content)
    content = content.rstrip(" ")
    if not _is_item(content):
        return _key_shape(content, indent, may_resolve)
    rest = content[1:].lstrip(" ")
    if not rest or rest[0] == "#" or _is_item(rest):
        raise Unsupported  # a bare `-` or `- -`: rare, and libyaml's to read
    column = indent + len(content) - len(rest)
    if _KEY.match(rest):  # `- key: value`: a mapping at the column of its key
        return (indent, None, _ITEM, _key_shape(rest, column, may_resolve))
    return (indent, None, _ITEM, (column, None, *_value(rest, may_resolve)))


def _key_shape(content: str, indent: int, may_resolve: Container[str]) -> Shape:
    match = _KEY.match(content)
    if match is None:
        raise Unsupported  # neither a key nor an item: not the YAML this reader reads
    key, rest = match.groups()
    if rest is None or rest[0] == "#":
        return (indent, key, _BELOW, None)
    return (indent, key, *_value(rest, may_resolve))


def _is_item(content: str) -> bool:
    return content[0] == "-" and (len(content) == 1 or content[1] == " ")


def _value(text: str, may_resolve: Container[str]) -> tuple[int, Any]:
    """(kind, payload) of a value written on its key's (or its dash's) line."""
    first = text[0]
    if first in "{[":
        template, end = _flow(text, 0, may_resolve, 1)
        rest = text[end:]
        if rest and not (rest[0] == " " and rest.lstrip(" ")[:1] == "#"):
            raise Unsupported
        return _FLOW, template
    if first in "\"'":
        match = (_DOUBLE if first == '"' else _SINGLE).match(text)
        if match is None:
            raise Unsupported  # an escape, or a quote closed on another line
        rest = text[match.end() :]
        if rest and not (rest[0] == " " and rest.lstrip(" ")[:1] == "#"):
            raise Unsupported
        value = match.group(1)
        if first == "'":
            value = value.replace("''", "'")
        return _quoted(value, first)
    if first in _NOT_PLAIN or (first in "-?:" and (len(text) == 1 or text[1] == " ")):
        raise Unsupported
    cut = text.find(" #")
    if cut >= 0:
        text = text[:cut].rstrip(" ")
    if ": " in text or text[-1] == ":":
        raise Unsupported  # "mapping values are not allowed here": libyaml words it
    return _plain(text, may_resolve)


def _plain(text: str, may_resolve: Container[str]) -> tuple[int, Any]:
    # As loading's event path: plain text with nothing to resolve or expand stays text.
    if "$" in text:
        return _SCALAR, (text, None)
    if text[:1] in may_resolve:
        return _RESOLVE, text
    return _TEXT, text


def _quoted(text: str, style: str) -> tuple[int, Any]:
    # Quoted text is never resolved: only a ${VAR} in it is the builder's.
    if "$" in text:
        return _SCALAR, (text, style)
    return _TEXT, text


def _flow(text: str, at: int, may_resolve: Container[str], depth: int) -> tuple[Template, int]:
    """The template of the flow collection opening at ``text[at]``, and the index past it."""
    if depth >= MAX_DEPTH:
        raise Unsupported
    mapping = text[at] == "{"
    # Only one kind is tried, as a regex that fails costs about what one that matches does.
    nested = text.find("{", at + 1) >= 0 or text.find("[", at + 1) >= 0
    if nested and depth + 1 < MAX_DEPTH:  # else the generic path below words the depth
        shallow = (_SHALLOW_MAPPING if mapping else _SHALLOW_SEQUENCE).match(text, at)
        if shallow is not None:
            return _shallow(shallow.group()[1:-1], mapping, may_resolve), shallow.end()
    else:
        flat = (_FLAT_MAPPING if mapping else _FLAT_SEQUENCE).match(text, at)
        if flat is not None:
            return _flat(flat.group()[1:-1], mapping, may_resolve), flat.end()
    closer = "}" if mapping else "]"
    items: list[Any] = []
    keys: set[str] = set()
    nesting, count = 1, 0  # flow levels, and mapping keys at every level
    at = _SPACES.match(text, at + 1).end()  # type: ignore[union-attr]
    if text[at : at + 1] == closer:
        return (1, 0, (), mapping), at + 1
    while True:
        key = ""
        if mapping:
            match = _FLOW_KEY.match(text, at)
            if match is None:
                raise Unsupported
            key = match.group(1)
            if key in keys:
                raise Unsupported
            keys.add(key)
            at = match.end()
            count += 1
        kind, payload, at = _flow_value(text, at, may_resolve, depth)
        if kind == _FLOW:
            nesting = max(nesting, payload[0] + 1)
            count += payload[1]
        items.append((key, kind, payload) if mapping else (kind, payload))
        at = _SPACES.match(text, at).end()  # type: ignore[union-attr]
        next_char = text[at : at + 1]
        if next_char == closer:
            return (nesting, count, tuple(items), mapping), at + 1
        if next_char != ",":
            raise Unsupported
        at = _SPACES.match(text, at + 1).end()  # type: ignore[union-attr]
        if text[at : at + 1] in (closer, ""):
            raise Unsupported  # a trailing comma, or not closed on this line


def _flat(inner: str, mapping: bool, may_resolve: Container[str]) -> Template:
    """A flow collection matched by _FLAT_MAPPING or _FLAT_SEQUENCE, without brackets."""
    if not inner.strip(" "):
        return (1, 0, (), mapping)
    items: list[Any] = []
    keys: set[str] = set()
    for item in inner.split(","):
        if not mapping:
            items.append(_plain(item.strip(" "), may_resolve))
            continue
        key, value = item.split(":", 1)
        key = key.strip(" ")
        if key in keys:
            raise Unsupported
        keys.add(key)
        items.append((key, *_plain(value.strip(" "), may_resolve)))
    return (1, len(keys), tuple(items), mapping)


def _shallow(inner: str, mapping: bool, may_resolve: Container[str]) -> Template:
    """A flow collection matched by _SHALLOW_MAPPING or _SHALLOW_SEQUENCE, without brackets."""
    items: list[Any] = []
    keys: set[str] = set()
    nesting, count = 1, 0
    for match in (_SHALLOW_PAIR if mapping else _SHALLOW_ITEM).finditer(inner):
        key, sequence, pairs, plain = match.groups()
        if plain is not None:
            kind, payload = _plain(plain.rstrip(" "), may_resolve)
        else:
            kind, payload = _FLOW, _flat((pairs or sequence)[1:-1], pairs is not None, may_resolve)
            nesting = 2
            count += payload[1]
        if not mapping:
            items.append((kind, payload))
            continue
        if key in keys:
            raise Unsupported
        keys.add(key)
        count += 1
        items.append((key, kind, payload))
    return (nesting, count, tuple(items), mapping)


def _flow_value(
    text: str, at: int, may_resolve: Container[str], depth: int
) -> tuple[int, Any, int]:
    first = text[at : at + 1]
    if first in ("{", "["):
        return (_FLOW, *_flow(text, at, may_resolve, depth + 1))
    if first in ('"', "'"):
        match = (_DOUBLE if first == '"' else _SINGLE).match(text, at)
        if match is None:
            raise Unsupported
        value = match.group(1)
        if first == "'":
            value = value.replace("''", "'")
        return (*_quoted(value, first), match.end())
    match = _FLOW_PLAIN.match(text, at)
    if match is None:
        raise Unsupported
    return (*_plain(match.group().rstrip(" "), may_resolve), match.end())


class _Reader:
    """One document's shapes → data, recording lines and resolving scalars on the way."""

    __slots__ = ("builder", "keys", "lines", "null", "numbers", "resolved", "shapes")

    def __init__(
        self,
        shapes: list[Shape],
        numbers: list[int],
        builder: Builder,
        null: tuple[int, Any],
        resolved: dict[str, Any],
    ) -> None:
        self.resolved = resolved
        self.shapes = shapes  # ending with _END
        self.numbers = numbers
        self.builder = builder
        self.lines = builder.lines
        self.null = null
        self.keys = 0

    def block(self, i: int, indent: int, path: KeyPath, depth: int) -> tuple[Any, int]:
        """The block collection starting at line ``i`` (at ``indent``), and the next line."""
        if depth >= MAX_DEPTH:
            raise Unsupported
        shape = self.shapes[i]
        if shape[2] == _ITEM:
            return self.sequence(i, indent, path, depth + 1)
        return self.mapping(shape, self.numbers[i], i + 1, indent, path, depth + 1)

    def mapping(
        self, shape: Shape, line: int, i: int, indent: int, path: KeyPath, depth: int
    ) -> tuple[dict[str, Any], int]:
        """A block mapping whose first key line is ``shape`` (on ``line``); ``i``: next line."""
        shapes = self.shapes
        lines = self.lines
        result: dict[str, Any] = {}
        while True:
            _, key, kind, payload = shape
            assert key is not None  # a shape of this block's indent, not an item: a key line
            if key in result:
                raise Unsupported  # libyaml's paths word a duplicate
            child = (*path, key)
            lines[child] = line
            if kind == _TEXT:
                value = payload
            elif kind == _BELOW:
                below = shapes[i][0]
                if below > indent:
                    value, i = self.block(i, below, child, depth)
                elif below == indent and shapes[i][2] == _ITEM:
                    # A sequence may sit at its key's own indent.
                    value, i = self.sequence(i, indent, child, depth + 1)
                else:
                    value = self.value(self.null, line, child, depth)
            else:
                value = self.value((kind, payload), line, child, depth)
            if shapes[i][0] > indent:
                raise Unsupported  # a scalar going on below its line, or a line indented oddly
            result[key] = value
            shape = shapes[i]
            if shape[0] != indent or shape[2] == _ITEM:
                self.keys += len(result)
                return result, i
            line = self.numbers[i]
            i += 1

    def sequence(self, i: int, indent: int, path: KeyPath, depth: int) -> tuple[list[Any], int]:
        """The block sequence whose first ``-`` is line ``i``, at ``indent``."""
        shapes = self.shapes
        result: list[Any] = []
        while True:
            line = self.numbers[i]
            item = shapes[i][3]
            child = (*path, len(result))
            self.lines[child] = line
            if item[1] is not None:  # `- key: value`: a mapping at the column of its key
                value, i = self.mapping(item, line, i + 1, item[0], child, depth + 1)
            else:
                value = self.value(item[2:], line, child, depth)
                i += 1
                if shapes[i][0] > indent:
                    raise Unsupported
            result.append(value)
            shape = shapes[i]
            if shape[0] != indent or shape[2] != _ITEM:
                return result, i

    def value(self, form: tuple[int, Any], line: int, path: KeyPath, depth: int) -> Any:
        """The value of a _TEXT, _SCALAR or _FLOW (kind, payload) written on ``line``."""
        kind, payload = form
        if kind == _FLOW:
            if depth + payload[0] >= MAX_DEPTH:
                raise Unsupported  # as deep as the reader goes, flow levels and blocks together
            self.keys += payload[1]
        return self.made(kind, payload, line, path)

    def made(self, kind: int, payload: Any, line: int, path: KeyPath) -> Any:
        """A fresh value of (kind, payload), recorded at ``line``: one dispatch for all."""
        if kind == _TEXT:
            return payload
        if kind == _RESOLVE:
            return self.resolve(payload, line, path)
        if kind == _SCALAR:
            return self.builder.scalar(None, payload[0], _Source(payload[1], line), path)
        return self.collection(payload, line, path)

    def collection(self, template: Template, line: int, path: KeyPath) -> Any:
        """Fresh containers after ``template``, every value recorded at ``line``."""
        lines = self.lines
        made = self.made
        if template[3]:
            mapping: dict[str, Any] = {}
            for key, kind, payload in template[2]:
                child = (*path, key)
                lines[child] = line
                mapping[key] = payload if kind == _TEXT else made(kind, payload, line, child)
            return mapping
        sequence: list[Any] = []
        for kind, payload in template[2]:
            child = (*path, len(sequence))
            lines[child] = line
            sequence.append(payload if kind == _TEXT else made(kind, payload, line, child))
        return sequence

    def resolve(self, text: str, line: int, path: KeyPath) -> Any:
        """A plain scalar that may resolve: as ``Builder.scalar`` made it, once per text."""
        value = self.resolved.get(text, _UNRESOLVED)
        if value is _UNRESOLVED:
            value = self.builder.scalar(None, text, _Source(None, line), path)
            if type(value) in _CONSTANTS:
                self.resolved[text] = value
        return value
