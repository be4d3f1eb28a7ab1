"""Reading manifest files: YAML text → documents that remember where every key was written.

Called by validating (and so by every command). The only module that imports ``yaml``.

Why compose nodes instead of ``safe_load``: every later error must name the file and the
line of the key at fault, and only the node tree carries positions. ``${VAR}`` expansion
happens here, on scalars, so that a value's line is still known when it is wrong, and so
that validating can tell a secret that came from the environment from a literal one.

Three readers, the quickest first, each giving up on what the next one handles:
``yaml_lines`` (plain block YAML, line by line), ``_load_events`` (libyaml's events) and
``_load_nodes`` (libyaml's node tree: everything, and the wording of every error).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from controller import collecting, yaml_lines
from controller.errors import Problem

try:  # libyaml is ~10x faster; the pure-Python loader is the same grammar.
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

SUFFIXES = (".yaml", ".yml")
# Real manifests nest a handful of levels. Past these bounds a file is an accident or an
# attack: libyaml's composer recurses in C (100,000 nested "[" kill the process), a
# self-referencing alias never ends, and ten nested aliases of ten expand to 10^10 values.
MAX_DEPTH = 64
MAX_VALUES = 100_000
KeyPath = tuple[str | int, ...]

# ${NAME} or ${NAME:-default}; "$${" escapes a literal "${".
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_WHOLE_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}$")
_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """One YAML document: its data, and the line of every key path in it."""

    file: str  # as shown to users: relative to the working directory when below it
    path: Path  # absolute, for resolving relative paths written in the manifest
    index: int  # 0-based position in its file
    line: int  # 1-based line where the document starts
    data: Any
    lines: Mapping[KeyPath, int]
    # Key paths whose value was exactly one ${VAR} reference with no default: secrets must be.
    from_env: frozenset[KeyPath]
    # Key paths that referenced an unset variable with no default, and that variable.
    # Validating decides: an error in most fields, but a secret is only needed when used.
    unset: Mapping[KeyPath, str] = msgspec.field(default_factory=dict)
    # Key paths whose value loading refused (`!!int abc`, `.nan`) and reported; the text
    # stands in for it, so validating must not report the same value again.
    refused: frozenset[KeyPath] = frozenset()

    def line_of(self, path: Iterable[str | int]) -> int:
        """The line of ``path``, or of its nearest ancestor written in the file."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.line


class LoadResult(msgspec.Struct, frozen=True):
    documents: tuple[Document, ...]
    problems: tuple[Problem, ...]
    files: int


def discover(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Every manifest file under ``paths``: directories walked recursively, in sorted order."""
    files: list[Path] = []
    problems: list[Problem] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            matched = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in SUFFIXES and not p.is_dir() and not _hidden(p, path)
            )
            if not matched:
                problems.append(Problem(str(given), 0, "", "no *.yaml or *.yml manifests found"))
            for p in matched:
                # Why not skip the rest: a manifest left out looks deleted, and is pruned.
                if p.is_file():
                    files.append(p)
                else:
                    problems.append(_not_a_file(display_name(p.absolute()), p))
        elif path.is_file():
            files.append(path)
        elif path.exists() or path.is_symlink():
            problems.append(_not_a_file(str(given), path))
        else:
            problems.append(Problem(str(given), 0, "", "no such file or directory"))
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique, problems


def _not_a_file(shown: str, path: Path) -> Problem:
    broken = path.is_symlink() and not path.exists()
    reason = "broken symbolic link" if broken else "not a regular file"  # a FIFO would block
    return Problem(shown, 0, "", f"cannot read: {reason}")


def _hidden(path: Path, root: Path) -> bool:
    # .converge/ (state, sandbox) and .git/ live beside manifests; never read them as manifests.
    return any(part.startswith(".") for part in path.relative_to(root).parts[:-1])


def load(
    paths: Iterable[str | Path],
    *,
    environ: Mapping[str, str] | None = None,
    freeze: bool = False,
) -> LoadResult:
    """Load every document under ``paths``. Problems are collected, never raised.

    ``freeze``: for a process that owns its heap (the CLI), see ``controller.collecting``.
    """
    env = os.environ if environ is None else environ
    files, problems = discover(paths)
    documents: list[Document] = []
    with collecting.paused(freeze=freeze):
        for path in files:
            docs, file_problems = load_file(path, environ=env)
            documents.extend(docs)
            problems.extend(file_problems)
    return LoadResult(tuple(documents), tuple(problems), len(files))


def display_name(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_file(path: Path, *, environ: Mapping[str, str]) -> tuple[list[Document], list[Problem]]:
    shown = display_name(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [Problem(shown, 0, "", f"cannot read: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return [], [Problem(shown, line, "", "cannot read: not UTF-8 text")]
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        return [], [Problem(shown, line, "", "cannot read: binary data (NUL byte)")]

    try:
        return _load_lines(text, shown, path, environ)
    except yaml_lines.Unsupported:
        pass  # not plain block YAML: libyaml reads it
    try:
        return _load_events(text, shown, path, environ)
    except _Fallback:
        # The node tree handles (and words) everything the fast path leaves to it.
        return _load_nodes(text, shown, path, environ)


def _load_lines(
    text: str, shown: str, path: Path, environ: Mapping[str, str]
) -> tuple[list[Document], list[Problem]]:
    """The documents of ``text`` read line by line (``yaml_lines``): plain block YAML only."""
    documents: list[Document] = []
    problems: list[Problem] = []
    read = yaml_lines.read(text, lambda: _Builder(shown, environ), _MAY_RESOLVE)
    for index, line, data, builder in read:
        problems.extend(builder.problems)
        if data is not None:  # an empty document (`---` alone): nothing declared
            documents.append(_document(builder, shown, path, index, line, data))
    return documents, problems


def _document(
    builder: _Builder, shown: str, path: Path, index: int, line: int, data: Any
) -> Document:
    return Document(
        file=shown,
        path=path,
        index=index,
        line=line,
        data=data,
        lines=builder.lines,
        from_env=frozenset(builder.from_env),
        unset=builder.unset,
        refused=frozenset(builder.refused),
    )


def _load_nodes(
    text: str, shown: str, path: Path, environ: Mapping[str, str]
) -> tuple[list[Document], list[Problem]]:
    """The documents of ``text`` through PyYAML's node tree: slower, and handles anything."""
    documents: list[Document] = []
    problems: list[Problem] = []
    try:
        if not _surely_shallow(text):
            _check_depth(text)
        for index, node in enumerate(yaml.compose_all(text, Loader=_Loader)):
            if node is None:
                continue
            builder = _Builder(shown, environ)
            try:
                data = builder.build(node, ())
            except _TooLarge as exc:
                problems.append(Problem(shown, exc.line, "", exc.message))
                continue
            if data is None:  # an empty document (`---` alone): nothing declared
                continue
            problems.extend(builder.problems)
            line = node.start_mark.line + 1
            documents.append(_document(builder, shown, path, index, line, data))
    except _TooLarge as exc:
        problems.append(Problem(shown, exc.line, "", exc.message))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 0
        position = getattr(exc, "position", None)  # a ReaderError has no mark, only this
        if not line and isinstance(position, int):
            line = text[:position].count("\n") + 1
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problems.append(Problem(shown, line, "", f"invalid YAML: {reason}"))
    return documents, problems


class _Fallback(Exception):
    """The fast path met what only the node-tree path handles: it starts that one afresh."""


_SCALAR_EVENT = yaml.ScalarEvent
_COLLECTION_STARTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_COLLECTION_ENDS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_FAST_DEPTH = MAX_DEPTH // 2  # deeper documents are left to the exact checks of the node path
_NO_KEY = object()


def _load_events(
    text: str, shown: str, path: Path, environ: Mapping[str, str]
) -> tuple[list[Document], list[Problem]]:
    """The documents of ``text``, built straight from the parser's events.

    Why not compose nodes: libyaml's composer builds a Node and two Marks per value and
    resolves each scalar's tag through a Python method, about half the cost of loading
    10,000 manifests. Walking events builds the same data and the same lines in one pass.

    It covers what manifests are made of: mappings, sequences and scalars, with or without
    tags. Anchors and aliases, ``<<`` merges, complex or duplicate keys, deep nesting, very
    large documents and syntax errors raise _Fallback, and the whole file is then loaded by
    the node-tree path, which words every problem. So the fast path never has to be right
    about anything unusual; it only has to agree on the usual (tests/unit/test_loading_fast.py).
    """
    loader = _Loader(text)
    try:
        get_event = loader.get_event
        documents: list[Document] = []
        problems: list[Problem] = []
        index = 0
        while True:
            event = get_event()
            kind = type(event)
            if kind is yaml.DocumentStartEvent:
                builder = _Builder(shown, environ)
                line, data = _event_document(get_event, builder)
                problems.extend(builder.problems)
                if data is not None:  # an empty document (`---` alone): nothing declared
                    documents.append(_document(builder, shown, path, index, line, data))
                index += 1
            elif kind is yaml.StreamEndEvent:
                return documents, problems
    except yaml.YAMLError:
        raise _Fallback from None
    finally:
        loader.dispose()


def _event_document(get_event: Any, builder: _Builder) -> tuple[int, Any]:
    """(line, data) of the document whose start event was just read."""
    event = get_event()
    document_line = event.start_mark.line + 1
    lines = builder.lines
    if type(event) is _SCALAR_EVENT:
        if event.anchor is not None:
            raise _Fallback
        return document_line, builder.scalar(event.tag, event.value, event, ())
    # (container, its key path) of every open collection but the innermost.
    stack: list[tuple[Any, KeyPath]] = []
    container: Any = None
    path: KeyPath = ()
    key: Any = _NO_KEY  # in a mapping: the key whose value comes next
    root: Any = None
    values = 0
    while True:
        kind = type(event)
        if kind is _SCALAR_EVENT:
            if event.anchor is not None:
                raise _Fallback
            value = event.value
            in_mapping = type(container) is dict
            if in_mapping and key is _NO_KEY:
                if value in container or (value == "<<" and event.implicit[0]):
                    raise _Fallback  # a duplicate or a merge: the node path words it
                key = value
                lines[(*path, value)] = event.start_mark.line + 1
            else:
                if not in_mapping:
                    lines[(*path, len(container))] = event.start_mark.line + 1
                if event.tag is not None or value[:1] in _MAY_RESOLVE or "$" in value:
                    item_path = (*path, key) if in_mapping else (*path, len(container))
                    value = builder.scalar(event.tag, value, event, item_path)
                # else plain text, the most common value: nothing more to do
                if in_mapping:
                    container[key] = value
                    key = _NO_KEY
                else:
                    container.append(value)
            values += 1
        elif kind in _COLLECTION_STARTS:
            if event.anchor is not None or len(stack) >= _FAST_DEPTH:
                raise _Fallback
            new: Any = {} if kind is yaml.MappingStartEvent else []
            new_path: KeyPath
            if container is None:
                root, new_path = new, ()
            elif type(container) is dict:
                if key is _NO_KEY:
                    raise _Fallback  # a collection as a key
                container[key] = new
                new_path = (*path, key)
            else:
                new_path = (*path, len(container))
                lines[new_path] = event.start_mark.line + 1
                container.append(new)
            stack.append((container, path))
            container, path, key = new, new_path, _NO_KEY
            values += 1
        elif kind in _COLLECTION_ENDS:
            container, path = stack.pop()
            key = _NO_KEY
            if not stack:
                return document_line, root
        else:  # an alias
            raise _Fallback
        if values > MAX_VALUES:
            raise _Fallback
        event = get_event()


class _TooLarge(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# A line that starts a document (or ends one): no collection spans it.
_DOCUMENT_MARKER = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|$)", re.MULTILINE)
_COLLECTION_INDICATORS = "[{-?:"


def _surely_shallow(text: str) -> bool:
    """True when no document in ``text`` can nest deeper than MAX_DEPTH: no need to check.

    Why it holds: every collection owns at least one indicator character of its own (``[``
    or ``{`` opens a flow one; a block sequence has its ``-``, a mapping the ``:`` or ``?``
    of its first key), so a document nests at most as deep as it has such characters. Why
    bother: the exact check parses the text a second time, a third of loading 10,000
    manifests; real documents have a few dozen indicators, deep ones fall back to it.
    """
    for document in _DOCUMENT_MARKER.split(text):
        if sum(map(document.count, _COLLECTION_INDICATORS)) > MAX_DEPTH:
            return False
    return True


def _check_depth(text: str) -> None:
    """Raise _TooLarge before composing a tree deeper than MAX_DEPTH.

    Why events: the parser is a loop, the composer a recursion (in C, past Python's guard).
    A syntax error is left for the composer to report, with the documents before it.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    assert mark is not None  # the parser marks every event it makes
                    raise _TooLarge(mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        # The libyaml in newer PyYAML wheels (6.0.4's) stops at 1,000 levels, and its
        # scanner reads a run of "[" ahead of the events: told in our words, as any
        # nesting past MAX_DEPTH is, whichever libyaml a machine has.
        if exc.problem == "exceeded maximum nesting depth" and exc.problem_mark is not None:
            raise _TooLarge(
                exc.problem_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels"
            ) from None
    except yaml.YAMLError:
        return


class _Builder:
    """Node tree → plain Python data, recording each key's line and expanding ${VAR}."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.lines: dict[KeyPath, int] = {}
        self.from_env: set[KeyPath] = set()
        self.unset: dict[KeyPath, str] = {}
        self.refused: set[KeyPath] = set()
        self.problems: list[Problem] = []
        self.values = 0

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        # Aliases make the tree a graph: bound what walking it may cost.
        self.values += 1
        if len(path) > MAX_DEPTH:
            raise _TooLarge(node.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
        if self.values > MAX_VALUES:
            raise _TooLarge(
                node.start_mark.line + 1,
                f"more than {MAX_VALUES} values once aliases are expanded",
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            result = []
            for i, item in enumerate(node.value):
                self.lines[(*path, i)] = item.start_mark.line + 1
                result.append(self.build(item, (*path, i)))
            return result
        assert isinstance(node, yaml.ScalarNode)  # a composed node's only other kind
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                self._problem(line, dotted(path), "keys must be plain strings")
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in result:
                self._problem(line, dotted(child), "duplicate key")
                continue
            self.lines[child] = line
            result[key] = self.build(value_node, child)
        return result

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        return self.scalar(node.tag, node.value, node, path)

    def scalar(self, tag: str | None, value: str, source: Any, path: KeyPath) -> Any:
        """The value of a scalar node or event (``source``: its ``style`` and ``implicit``)."""
        if tag is None or tag == "!":  # an event's tag is unresolved; a node's never is
            tag = _resolve(value, source.implicit[0])
        if tag == _STR:
            if "$" not in value:
                return value
            expanded = self._expand(value, path)
            whole = _WHOLE_REFERENCE.match(value)
            if whole:
                if whole.group(1) is None:  # a default would be a literal committed to git
                    self.from_env.add(path)
                if not source.style:  # a plain `${N:-8}` may stand for a number or a boolean
                    return _typed(expanded)
            return expanded
        if tag not in _SCALARS:
            # Anything else YAML would build (timestamps, binary, custom tags) stays text: the
            # schemas only speak JSON types, and a date in a description must stay a string.
            return value
        # `!!int abc`, `!!bool maybe`, `!!int` with no value: whatever the constructor trips on.
        shown = value if len(value) <= 40 else value[:37] + "..."
        try:
            result = _construct(tag, value)
        except (ValueError, LookupError, ArithmeticError, TypeError):
            message = f"invalid YAML: {shown!r} is not a valid !!{tag.rsplit(':', 1)[-1]}"
        else:
            if type(result) is not float or math.isfinite(result):
                return result
            # .nan, .inf, 1.0e+400: JSON, which every API converge talks to speaks, has
            # neither; and a NaN is unequal even to itself, so it would drift for ever.
            message = f"{shown!r} is not a finite number (JSON has no NaN or infinity)"
        self._problem(source.start_mark.line + 1, dotted(path), message)
        self.refused.add(path)
        return value

    def _expand(self, value: str, path: KeyPath) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            self.unset[path] = name
            return ""

        return _REFERENCE.sub(replace, value)

    def _problem(self, line: int, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, key, message))


def _typed(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        number = float(text)
        return number if math.isfinite(number) else text  # 1e400: too big for JSON
    return text


def dotted(path: KeyPath) -> str:
    """``("spec", "roles", 0)`` → ``spec.roles[0]``: how keys are named in errors."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part or not part.isprintable():  # a line break must not split an error line
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_CONSTRUCTOR = yaml.SafeLoader("")
_SCALARS = {
    tag: yaml.SafeLoader.yaml_constructors[tag]
    for tag in (
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
    )
}


class _Everything:
    def __contains__(self, _item: object) -> bool:
        return True


# The resolver's table, as PyYAML's Resolver.resolve reads it: implicit tags by first
# character, then the wildcard ones. Read once here because resolving runs for every scalar.
_IMPLICIT: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {}
_WILDCARD = tuple(yaml.resolver.Resolver.yaml_implicit_resolvers.get(None, ()))
for _first, _resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items():
    if _first is not None:
        _IMPLICIT[_first] = (*_resolvers, *_WILDCARD)


# First characters of a plain scalar that may resolve to a tag other than str ("" for the
# empty one); with wildcard resolvers registered, every character may.
_MAY_RESOLVE: frozenset[str] | _Everything = _Everything() if _WILDCARD else frozenset(_IMPLICIT)


def _resolve(value: str, plain: bool) -> str:
    """The tag of an untagged scalar: ``yaml.resolver.Resolver.resolve`` with no path rules."""
    if not plain:  # quoted or block text is always a string
        return _STR
    for tag, pattern in _IMPLICIT.get(value[:1], _WILDCARD):
        if pattern.match(value):
            return tag
    return _STR


# Numbers, booleans and nulls repeat across manifests (every `visible: true`); building
# each once saves a constructor call. The values are immutable, so sharing them is safe.
_CONSTRUCTED: dict[tuple[str, str], Any] = {}


def _construct(tag: str, value: str) -> Any:
    try:
        return _CONSTRUCTED[tag, value]
    except KeyError:
        pass
    result = _SCALARS[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, value))
    if len(_CONSTRUCTED) < 10_000:
        _CONSTRUCTED[tag, value] = result
    return result
