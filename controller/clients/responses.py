"""What a server answered, as plain data: status, case-insensitive headers, body.

Built by ``controller.clients.http`` (kept apart so http.py stays the transport and
nothing here touches httpx); read by every API client and by their ``error_message``
functions, which turn each product's error shape into the server's own words.
"""

from __future__ import annotations

import dataclasses
import json as jsonlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from controller import errors, redaction

MAX_MESSAGE = 300  # characters of a server message we show
SNIPPET = 100  # characters of an unexpected body we show


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive header map (repeated headers joined by ", ")."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        merged: dict[str, tuple[str, str]] = {}
        for key, value in items:
            low = key.lower()
            if low in merged:
                merged[low] = (merged[low][0], f"{merged[low][1]}, {value}")
            else:
                merged[low] = (key, value)
        self._items = merged

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"  # names only: values may be secrets


@dataclasses.dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    method: str
    path: str
    connection: str = ""
    secrets: frozenset[str] = dataclasses.field(default=frozenset(), repr=False, compare=False)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; a PermanentApiError naming the call if it is anything else."""
        if "html" in self.content_type or not self.body.strip():
            raise self._not_json()
        try:
            return jsonlib.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._not_json() from exc

    def snippet(self, limit: int = SNIPPET) -> str:
        """The start of the body on one line, for messages."""
        text = self.body[: limit * 4].decode("utf-8", errors="replace")
        return " ".join(text.split())[:limit]

    def _not_json(self) -> errors.PermanentApiError:
        got = self.content_type or "no content type"
        detail = f": {self.snippet()}" if self.body.strip() else " (an empty body)"
        return errors.PermanentApiError(
            redaction.redact(f"expected JSON, got {got}{detail}", self.secrets),
            connection=self.connection,
            method=self.method,
            path=self.path,
            status=self.status,
        )


def default_error_message(response: HttpResponse) -> str:
    """The body's text, on one line and truncated: for APIs without a known error shape."""
    return response.snippet(MAX_MESSAGE) or "(no message)"
