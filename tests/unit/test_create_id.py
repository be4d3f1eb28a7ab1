"""A roleapp's create id is RFC 4122 uuid5, byte for byte, however it is computed."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from controller import manifests


@given(connection=st.text(max_size=40), name=st.text(max_size=80))
def test_the_create_id_is_uuid5_of_connection_and_name(connection: str, name: str) -> None:
    expected = uuid.uuid5(uuid.NAMESPACE_URL, f"converge:{connection}/{name}")
    assert manifests._create_id(connection, name) == str(expected)
