"""The quickest way to read a manifest: plain block YAML, line by line, with one regex each.

Called by ``loading`` before its libyaml paths. Why it exists: libyaml's C parser alone
spent 0.40 s producing the events of 10,000 manifests, and building documents from those
events another 0.5 s, the largest part of ``converge plan``. Manifests are written in a
small, regular part of YAML: block mappings and sequences, flow collections on one line,
plain and simply quoted scalars. Reading just that part with a regular expression per line
costs about a third as much.

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
from typing import Any, Protocol

__all__ = ["Unsupported", "read"]

# Beyond these a document goes to libyaml, whose paths know the exact limits and words.
MAX_DEPTH = 32
MAX_VALUES = 100_000

KeyPath = tuple[str | int, ...]


class Unsupported(Exception):
    """The text uses YAML this reader leaves to libyaml (or is not valid YAML)."""


class Builder(Protocol):
    """What a document is built into: ``loading._Builder``."""

    lines: dict[KeyPath, int]

    def scalar(self, tag: str | None, value: str, source: Any, path: KeyPath) -> Any: ...


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
_FLOW_KEY = re.compile(rf"({_KEY_TEXT}): +")
_DOUBLE = re.compile(r'"([^"\\]*)"')
_SINGLE = re.compile(r"'((?:[^']|'')*)'")
# A plain scalar inside a flow collection: no flow indicators, no ":" or "#" or "?" at all.
_PLAIN_IN_FLOW = r"(?:[^\s,\[\]{}#&*!|>'\"%@`?:-]|-[^\s,\[\]{}#:?])[^,\[\]{}#:?]*"
_FLOW_PLAIN = re.compile(_PLAIN_IN_FLOW)
# A flow collection of plain scalars only, nothing nested: most of them (`roles: [a, b]`,
# `opts: {visible: true}`). Split at "," and ": " once matched, as no value holds either.
_FLAT_SEQUENCE = re.compile(rf"\[ *(?:{_PLAIN_IN_FLOW}(?:, *{_PLAIN_IN_FLOW})*)?\]")
_FLAT_MAPPING = re.compile(
    rf"\{{ *(?:{_KEY_TEXT}: +{_PLAIN_IN_FLOW}(?:, *{_KEY_TEXT}: +{_PLAIN_IN_FLOW})*)?\}}"
)
_SPACES = re.compile(" *")
# First characters that never start a plain scalar in a block (``-``, ``?`` and ``:`` only
# when a space or the end of the line follows them).
_NOT_PLAIN = frozenset(",[]{}#&*!|>'\"%@`")


def read(
    text: str, new_builder: Callable[[], Builder], may_resolve: Container[str]
) -> list[tuple[int, int, Any, Builder]]:
    """(index, line, data, builder) of each document of ``text``; data None when empty."""
    if "\r" in text:
        text = _without_crlf(text)
    if _UNSUPPORTED_TEXT.search(text):
        raise Unsupported
    documents: list[tuple[int, int, Any, Builder]] = []
    for index, entries in enumerate(_documents(text)):
        builder = new_builder()
        if not entries:  # `---` with nothing under it: an empty document
            documents.append((index, 0, None, builder))
            continue
        indent, line, _ = entries[0]
        if indent:
            raise Unsupported
        reader = _Reader(entries, builder, may_resolve)
        data, end = reader.block(0, 0, (), 0)
        if end != len(entries):
            raise Unsupported  # a line left over: indented oddly, or not YAML
        documents.append((index, line, data, builder))
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


Entry = tuple[int, int, str]  # (indent, 1-based line, the line without indent or end spaces)


def _documents(text: str) -> list[list[Entry]]:
    """The content lines of each document; comment and blank lines dropped."""
    documents: list[list[Entry]] = []
    current: list[Entry] = []
    explicit = False  # whether the current document began with `---`
    for number, line in enumerate(text.split("\n"), 1):
        content = line.lstrip(" ")
        if not content or content[0] == "#":
            continue
        if line.startswith(("---", "...", "%")):
            if line.rstrip(" ") != "---":
                raise Unsupported  # `--- value`, `...`, a directive
            if current or explicit:
                documents.append(current)
            current, explicit = [], True
            continue
        current.append((len(line) - len(content), number, content.rstrip(" ")))
    if current or explicit:
        documents.append(current)
    return documents


def _is_item(content: str) -> bool:
    return content[0] == "-" and (len(content) == 1 or content[1] == " ")


class _Reader:
    """One document's entries → data, recording lines and resolving scalars on the way."""

    def __init__(self, entries: list[Entry], builder: Builder, may_resolve: Container[str]) -> None:
        self.entries = entries
        self.builder = builder
        self.lines = builder.lines
        self.may_resolve = may_resolve
        self.values = 0

    def block(self, i: int, indent: int, path: KeyPath, depth: int) -> tuple[Any, int]:
        """The block collection starting at entry ``i`` (at ``indent``), and the next entry."""
        if depth >= MAX_DEPTH:
            raise Unsupported
        content = self.entries[i][2]
        if _is_item(content):
            return self.sequence(i, indent, path, depth + 1)
        return self.mapping(content, self.entries[i][1], i + 1, indent, path, depth + 1)

    def mapping(
        self, content: str, line: int, i: int, indent: int, path: KeyPath, depth: int
    ) -> tuple[dict[str, Any], int]:
        """A block mapping whose first key is ``content`` (on ``line``); ``i``: next entry."""
        entries = self.entries
        count = len(entries)
        lines = self.lines
        result: dict[str, Any] = {}
        while True:
            match = _KEY.match(content)
            if match is None:
                raise Unsupported
            key, rest = match.groups()
            if key in result or key == "<<":
                raise Unsupported  # libyaml's paths word a duplicate; a merge is theirs
            child = (*path, key)
            lines[child] = line
            self.values += 2
            if rest is None or rest[0] == "#":  # the value is on the lines below, or null
                if i < count and entries[i][0] > indent:
                    value, i = self.block(i, entries[i][0], child, depth)
                elif i < count and entries[i][0] == indent and _is_item(entries[i][2]):
                    # A sequence may sit at its key's own indent.
                    value, i = self.sequence(i, indent, child, depth + 1)
                else:
                    value = self.scalar("", None, line, child)
            else:
                value = self.inline(rest, line, child, depth)
                if i < count and entries[i][0] > indent:
                    raise Unsupported  # a plain scalar going on below, or an error
            result[key] = value
            if self.values > MAX_VALUES:
                raise Unsupported
            if i >= count or entries[i][0] != indent or _is_item(entries[i][2]):
                return result, i
            _, line, content = entries[i]
            i += 1

    def sequence(self, i: int, indent: int, path: KeyPath, depth: int) -> tuple[list[Any], int]:
        """The block sequence whose first ``-`` is entry ``i``, at ``indent``."""
        entries = self.entries
        count = len(entries)
        result: list[Any] = []
        while True:
            _, line, content = entries[i]
            rest = content[1:].lstrip(" ")
            if not rest or rest[0] == "#" or _is_item(rest):
                raise Unsupported  # a bare `-` or `- -`: rare, and libyaml's to read
            child = (*path, len(result))
            self.lines[child] = line
            self.values += 1
            if _KEY.match(rest):  # `- key: value`: a mapping at the column of its key
                column = indent + len(content) - len(rest)
                value, i = self.mapping(rest, line, i + 1, column, child, depth + 1)
            else:
                value = self.inline(rest, line, child, depth)
                i += 1
                if i < count and entries[i][0] > indent:
                    raise Unsupported
            result.append(value)
            if i >= count or entries[i][0] != indent or not _is_item(entries[i][2]):
                return result, i

    def inline(self, text: str, line: int, path: KeyPath, depth: int) -> Any:
        """A value written on its key's (or its dash's) line."""
        first = text[0]
        if first in "{[":
            value, end = self.flow(text, 0, line, path, depth + 1)
            rest = text[end:]
            if rest and not (rest[0] == " " and rest.lstrip(" ")[:1] == "#"):
                raise Unsupported
            return value
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
            return self.scalar(value, first, line, path)
        if first in _NOT_PLAIN or (first in "-?:" and (len(text) == 1 or text[1] == " ")):
            raise Unsupported
        cut = text.find(" #")
        if cut >= 0:
            text = text[:cut].rstrip(" ")
        if ": " in text or text[-1] == ":":
            raise Unsupported  # "mapping values are not allowed here": libyaml words it
        return self.scalar(text, None, line, path)

    def flow(self, text: str, at: int, line: int, path: KeyPath, depth: int) -> tuple[Any, int]:
        """The flow collection opening at ``text[at]``, and the index just past its end."""
        if depth >= MAX_DEPTH:
            raise Unsupported
        mapping = text[at] == "{"
        flat = (_FLAT_MAPPING if mapping else _FLAT_SEQUENCE).match(text, at)
        if flat is not None:
            return self.flat(flat.group()[1:-1], mapping, line, path), flat.end()
        closer = "}" if mapping else "]"
        result: Any = {} if mapping else []
        lines = self.lines
        at = _SPACES.match(text, at + 1).end()  # type: ignore[union-attr]
        if text[at : at + 1] == closer:
            return result, at + 1
        while True:
            if mapping:
                match = _FLOW_KEY.match(text, at)
                if match is None:
                    raise Unsupported
                key = match.group(1)
                if key in result or key == "<<":
                    raise Unsupported
                child: KeyPath = (*path, key)
                at = match.end()
                self.values += 1
            else:
                child = (*path, len(result))
            lines[child] = line
            self.values += 1
            value, at = self.flow_value(text, at, line, child, depth)
            if mapping:
                result[child[-1]] = value
            else:
                result.append(value)
            at = _SPACES.match(text, at).end()  # type: ignore[union-attr]
            next_char = text[at : at + 1]
            if next_char == closer:
                return result, at + 1
            if next_char != ",":
                raise Unsupported
            at = _SPACES.match(text, at + 1).end()  # type: ignore[union-attr]
            if text[at : at + 1] in (closer, ""):
                raise Unsupported  # a trailing comma, or not closed on this line

    def flat(self, inner: str, mapping: bool, line: int, path: KeyPath) -> Any:
        """A flow collection matched by _FLAT_MAPPING or _FLAT_SEQUENCE, without brackets."""
        lines = self.lines
        if not inner.strip(" "):
            return {} if mapping else []
        items = inner.split(",")
        self.values += len(items) * (2 if mapping else 1)
        if not mapping:
            result: list[Any] = []
            for position, item in enumerate(items):
                child = (*path, position)
                lines[child] = line
                result.append(self.scalar(item.strip(" "), None, line, child))
            return result
        pairs: dict[str, Any] = {}
        for item in items:
            key, value = item.split(":", 1)
            key = key.strip(" ")
            if key in pairs or key == "<<":
                raise Unsupported
            child = (*path, key)
            lines[child] = line
            pairs[key] = self.scalar(value.strip(" "), None, line, child)
        return pairs

    def flow_value(self, text: str, at: int, line: int, path: KeyPath, depth: int) -> Any:
        first = text[at : at + 1]
        if first in ("{", "["):
            return self.flow(text, at, line, path, depth + 1)
        if first in ('"', "'"):
            match = (_DOUBLE if first == '"' else _SINGLE).match(text, at)
            if match is None:
                raise Unsupported
            value = match.group(1)
            if first == "'":
                value = value.replace("''", "'")
            return self.scalar(value, first, line, path), match.end()
        match = _FLOW_PLAIN.match(text, at)
        if match is None:
            raise Unsupported
        return self.scalar(match.group().rstrip(" "), None, line, path), match.end()

    def scalar(self, value: str, style: str | None, line: int, path: KeyPath) -> Any:
        # As loading's event path: plain text with nothing to resolve or expand stays text.
        if value[:1] in self.may_resolve or "$" in value:
            return self.builder.scalar(None, value, _Source(style, line), path)
        return value
