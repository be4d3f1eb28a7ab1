"""The benchmark's lean client reads answers right, and refuses to measure failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import lean_client


def test_an_answer_is_taken_whole_and_removed_from_the_buffer() -> None:
    buffer = bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 201")
    assert lean_client._answer(buffer) == b"{}"
    assert buffer == bytearray(b"HTTP/1.1 201")


@pytest.mark.parametrize(
    "partial",
    [b"HTTP/1.1 200 OK\r\nContent-Len", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}"],
)
def test_a_partial_answer_waits_for_more(partial: bytes) -> None:
    buffer = bytearray(partial)
    assert lean_client._answer(buffer) is None
    assert buffer == bytearray(partial)


def test_a_failure_stops_the_floor_with_its_status() -> None:
    buffer = bytearray(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope")
    with pytest.raises(lean_client.FloorError, match="401 Unauthorized"):
        lean_client._answer(buffer)


def test_an_answer_without_a_length_is_refused() -> None:
    with pytest.raises(lean_client.FloorError, match="Content-Length"):
        lean_client._answer(bytearray(b"HTTP/1.1 200 OK\r\n\r\n{}"))


def test_an_era_scenario_is_laid_out_as_its_bound() -> None:
    writes = [lean_client.create({"id": "a"}), lean_client.create({"id": "b"})]
    phases = lean_client.era_phases(
        pages=3, page_concurrency=8, writes=writes, write_concurrency=16
    )
    first, rest, posts, logout = phases
    assert [c.method for c in first.calls] == ["GET"] and "offset=0" in first.calls[0].path
    assert rest.concurrency == 8
    assert [c.path.rsplit("offset=", 1)[1] for c in rest.calls] == ["500", "1000", "1500"]
    assert posts.calls == tuple(writes) and posts.concurrency == 16
    assert [c.method for c in logout.calls] == ["DELETE"]
