"""The records manifests are built into (``msgspec.Struct``): frozen, compared by value,
and never showing a secret in ``repr`` — the one thing a dataclass field's ``repr=False``
did for us that msgspec does not, so ``manifests._repr_without`` does it by hand.
"""

from __future__ import annotations

import pickle

import msgspec
import pytest

from controller.manifests import (
    Api,
    Connection,
    Kind,
    SourceLocation,
    VcdaApplianceSource,
)
from controller.plans import Ref

HERE = SourceLocation("manifests/connections.yaml", 3)


def test_a_connection_never_shows_its_auth() -> None:
    auth = {"login": "converge", "password": "s3cret-pw", "token": "tok-8f1e"}
    connection = Connection(name="era-main", api=Api.ERA, url="https://era", auth=auth, source=HERE)
    shown = repr(connection)
    assert shown.startswith("Connection(name='era-main', api=")
    assert "url='https://era'" in shown and "source=SourceLocation(" in shown
    assert "s3cret-pw" not in shown and "tok-8f1e" not in shown and "auth" not in shown
    assert "s3cret-pw" not in str(connection) and "s3cret-pw" not in f"{[connection]}"


def test_a_vcda_source_never_shows_its_password() -> None:
    source = VcdaApplianceSource(password="Backup-pw-1")
    assert repr(source) == "VcdaApplianceSource()"
    assert source.password == "Backup-pw-1"


def test_records_are_frozen_compared_by_value_and_ordered() -> None:
    a, b = Ref(Kind.ROLEAPP, "era-main", "a"), Ref(Kind.ROLEAPP, "era-main", "b")
    assert sorted([b, a]) == [a, b]
    assert a == Ref(Kind.ROLEAPP, "era-main", "a") and hash(a) == hash(
        Ref(Kind.ROLEAPP, "era-main", "a")
    )
    with pytest.raises(AttributeError):
        a.name = "c"  # type: ignore[misc]
    assert msgspec.structs.replace(a, name="c").name == "c" and a.name == "a"
    assert pickle.loads(pickle.dumps(HERE)) == HERE
