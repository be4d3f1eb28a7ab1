"""HTTP/1.1 request framing for the emulator's server: the header block and the body.

Used by ``server.py`` only. Why not ``http.client.parse_headers``, which
``BaseHTTPRequestHandler`` uses: it runs the ``email`` package's feed parser on every
request, ~30-100 µs of CPU under the GIL that every request shares, the largest single cost
of a small API call (a create, a login). A header block of plain ``Name: value`` lines —
what every HTTP client sends — is parsed here directly into :class:`Headers`, which answers
``get`` exactly as ``email.message.Message`` does (case-insensitive, the first of repeated
names, leading blanks of the value dropped). Anything else (folded continuation lines, a
line without a colon, stray CRs) goes to the ``email`` parser as before, so odd input is
read exactly as the standard library reads it.
"""

from __future__ import annotations

import email.parser
import http.client
import io
import re
from collections.abc import Iterator, Mapping
from typing import Any

from controller.emulator import core

__all__ = ["Headers", "parse_headers", "read_body"]

# As http.client: the longest header line and the most header lines accepted.
_MAX_LINE = 65536
_MAX_HEADERS = 100
MAX_BODY = 512 * 1024 * 1024  # a roleapp archive is a zip of a few MB; refuse absurd sizes

# A line the email parser would read as one plain header: a name of printable characters
# other than ":" (its header pattern), a value with no CR or LF before the line's end.
_PLAIN_HEADER = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*)\r?\n?")


class Headers(Mapping[str, str]):
    """A request's header fields, looked up as ``email.message.Message.get`` does them."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields: dict[str, str] = {}
        for name, value in fields:
            self._fields.setdefault(name.lower(), value)  # the first of repeated names wins

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        return self._fields.get(name.lower(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


def parse_headers(rfile: io.BufferedIOBase) -> core.RequestHeaders:
    """The header block after the request line, read up to and including its blank line.

    Raises ``http.client.LineTooLong`` and ``http.client.HTTPException`` (too many lines)
    as ``http.client.parse_headers`` does.
    """
    lines: list[bytes] = []
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    text = [line.decode("iso-8859-1") for line in lines[:-1]]
    fields = []
    for header in text:
        plain = _PLAIN_HEADER.fullmatch(header)
        if plain is None:
            return email.parser.Parser(_class=http.client.HTTPMessage).parsestr("".join(text))
        fields.append((plain[1], plain[2]))
    return Headers(fields)


def read_body(rfile: io.BufferedIOBase, headers: core.RequestHeaders) -> bytes:
    """The request body, chunked or by ``Content-Length``; ValueError on bad framing."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(rfile.read(size))
            rfile.readline()
    length = int(headers.get("Content-Length") or 0)
    if length < 0 or length > MAX_BODY:
        raise ValueError(f"bad Content-Length {length}")
    return rfile.read(length) if length else b""
