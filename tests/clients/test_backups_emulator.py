"""The three backup clients against the emulated APIs over loopback HTTP.

Each client runs through a real ``HttpSession`` against ``EmulatorServer`` on 127.0.0.1:
trigger → poll to done, an injected failure, an aged backup the policy finds overdue, a
lost answer that must not make a second backup, and an expired session. The emulators run
on a hand-moved clock, so nothing waits for a backup to finish. An API whose emulator
module is not there yet is skipped, not failed.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from controller import policies
from controller.clients import backups
from controller.clients.backups import BackupState
from controller.clients.http import HttpSettings
from controller.emulator import server, storage
from controller.errors import AuthError
from controller.manifests import (
    Api,
    BackupPolicy,
    BackupSource,
    CommvaultDynamoDBSource,
    ElementApplicationSource,
    SourceLocation,
    VcdaApplianceSource,
)

APP = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
MAX_POLLS = 20  # every poll loop is bounded


class Clock:
    def __init__(self, start: float = 1_718_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclasses.dataclass(frozen=True)
class Product:
    api: Api
    module: str  # controller.emulator.<module>
    cls: str
    source: BackupSource
    seed: dict[str, Any]  # extra seed_backup payload naming what the policy backs up
    create_path: str  # regex of the trigger call, for drop_after_work
    setup: tuple[tuple[str, dict[str, Any]], ...] = ()  # control actions after each reset


PRODUCTS = [
    Product(
        Api.ELEMENT,
        "element",
        "ElementApi",
        ElementApplicationSource(application_id=APP, description="nightly"),
        {"application_id": APP},
        r".*/dumps$",
        (("seed_application", {"id": APP}),),
    ),
    Product(
        Api.VCDA,
        "vcda",
        "VcdaApi",
        VcdaApplianceSource(password="backup-file-secret-1"),
        {},
        r"^/backups$",
    ),
    Product(
        Api.COMMVAULT,
        "commvault",
        "CommvaultApi",
        CommvaultDynamoDBSource(client_name="aws-prod", instance_name="DynamoDB", subclient_id=123),
        {"subclient_id": 123},
        r"(?i)^/createtask$",
        (
            (
                "seed_subclient",
                {"subclient_id": 123, "client_name": "aws-prod", "instance_name": "DynamoDB"},
            ),
        ),
    ),
]


@dataclasses.dataclass
class Rig:
    product: Product
    emulated: Any
    clock: Clock
    make: Callable[[], backups.BackupApi]
    emulated_url: str

    @property
    def policy(self) -> BackupPolicy:
        return BackupPolicy(
            name="nightly",
            connection=f"{self.product.api}-main",
            source=self.product.source,
            max_age=26 * 3600,
            source_location=SourceLocation("backups.yaml", 1),
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def control(self, action: str, payload: dict[str, Any] | None = None) -> Any:
        return self.emulated.control(action, payload or {})

    def set_up(self) -> None:
        for action, payload in self.product.setup:
            self.control(action, payload)

    def seed(self, **payload: Any) -> Any:
        return self.control("seed_backup", {**self.product.seed, **payload})


@pytest.fixture(params=PRODUCTS, ids=[p.api.value for p in PRODUCTS])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    product: Product = request.param
    try:
        module = importlib.import_module(f"controller.emulator.{product.module}")
    except ModuleNotFoundError:
        pytest.skip(f"the {product.module} emulator is not written yet")
    clock = Clock()
    emulated = getattr(module, product.cls)(storage.Storage(), clock=clock)
    emulator = server.EmulatorServer([emulated]).start()
    made: list[backups.BackupApi] = []

    def make() -> backups.BackupApi:
        settings = HttpSettings(
            base_url=emulator.url_for(product.module),
            connection=f"{product.api}-main",
            timeout=5.0,
            backoff_base=0.0,
        )
        client = backups.open_backup_api(
            product.api, settings, emulated.credentials(), operation_id="run-1"
        )
        made.append(client)
        return client

    rig = Rig(product, emulated, clock, make, emulator.url_for(product.module))
    rig.set_up()
    try:
        yield rig
    finally:
        for client in made:
            client.close()
        emulator.stop()
        emulated.close()


def follow(rig: Rig, client: backups.BackupApi, handle: str) -> backups.LiveBackup:
    """Poll until done, moving the emulator's clock instead of sleeping."""
    for _ in range(MAX_POLLS):
        seen = client.poll(rig.policy, handle)
        if seen.done:
            return seen
        rig.clock.advance(0.3)
    raise AssertionError(f"backup {handle} did not finish within {MAX_POLLS} polls")


def test_trigger_then_poll_to_success(rig: Rig) -> None:
    client = rig.make()
    before = client.list_backups(rig.policy)
    handle = client.trigger(rig.policy)
    running = client.list_backups(rig.policy)
    assert (
        policies.evaluate(rig.policy, running, now=rig.now()).state is policies.PolicyState.RUNNING
    )
    done = follow(rig, client, handle)
    assert done.state is BackupState.SUCCEEDED, done.message
    listed = {b.id: b for b in client.list_backups(rig.policy)}
    assert done.id in listed and listed[done.id].state is BackupState.SUCCEEDED
    assert len(listed) == len(before) + 1
    status = policies.evaluate(rig.policy, list(listed.values()), now=rig.now())
    assert status.state is policies.PolicyState.COMPLIANT


def test_injected_failure_carries_the_servers_message(rig: Rig) -> None:
    rig.control("fail_next_backup", {"message": "storage quota exceeded"})
    client = rig.make()
    done = follow(rig, client, client.trigger(rig.policy))
    assert done.state is BackupState.FAILED
    assert "storage quota exceeded" in done.message
    status = policies.evaluate(rig.policy, client.list_backups(rig.policy), now=rig.now())
    assert status.state in (policies.PolicyState.FAILING, policies.PolicyState.NEVER)
    assert status.due


def test_aged_backup_is_listed_and_overdue(rig: Rig) -> None:
    rig.seed(age_seconds=30 * 3600)
    found = rig.make().list_backups(rig.policy)
    assert [b.state for b in found] == [BackupState.SUCCEEDED]
    status = policies.evaluate(rig.policy, found, now=rig.now())
    assert status.state is policies.PolicyState.OVERDUE
    assert status.reason == "newest success 30h ago exceeds maxAge 26h"


def test_lost_trigger_answer_makes_one_backup(rig: Rig) -> None:
    rig.control("drop_after_work", {"method": "POST", "path_regex": rig.product.create_path})
    client = rig.make()
    done = follow(rig, client, client.trigger(rig.policy))
    assert done.state is BackupState.SUCCEEDED
    succeeded = [b for b in client.list_backups(rig.policy) if b.state is BackupState.SUCCEEDED]
    assert len(succeeded) == 1


def test_expired_session_logs_in_again(rig: Rig) -> None:
    client = rig.make()
    client.list_backups(rig.policy)
    rig.control("expire_sessions")
    assert client.list_backups(rig.policy) == []


# Every documented variant of each product, switched on in the emulator at once.
VARIANTS = {
    Api.ELEMENT: [
        {"create_response": "object", "error_shape": "wrapped", "date_format": "iso",
         "expired_token": "400"},
        {"create_response": "array", "error_shape": "plain", "date_format": "dotted",
         "expired_token": "401"},
    ],
    Api.VCDA: [
        {"generated_on": "string", "result_type": "on_success", "delete_status": 200},
        {"generated_on": "number", "result_type": "always", "delete_status": 204},
    ],
    Api.COMMVAULT: [
        {"error_status": "4xx", "empty_job_polls": 2, "queued_status": "Waiting",
         "success_status": "Completed w/ one or more warnings"},
        {"error_status": "200", "empty_job_polls": 0, "queued_status": "Queued",
         "success_status": "Committed"},
    ],
}  # fmt: skip


def test_every_variant_round_trip(rig: Rig) -> None:
    for variant in VARIANTS[rig.product.api]:
        rig.control("reset")
        rig.set_up()
        rig.control("set_variant", variant)
        client = rig.make()
        rig.seed(age_seconds=3600)
        handle = client.trigger(rig.policy)
        assert any(b.state is BackupState.RUNNING for b in client.list_backups(rig.policy))
        rig.control("expire_sessions")
        done = follow(rig, client, handle)
        assert done.state is BackupState.SUCCEEDED, (variant, done)
        listed = client.list_backups(rig.policy)
        assert {b.state for b in listed} == {BackupState.SUCCEEDED}, variant
        aged = min(listed, key=lambda b: b.created or rig.now())
        assert aged.created is not None
        # Within a few minutes: a seeded job shows when it started, some time before it ended.
        assert abs((rig.now() - aged.created).total_seconds() - 3600) < 300, variant
        if rig.product.api is not Api.COMMVAULT:
            client.delete(rig.policy, done.id)
            assert done.id not in {b.id for b in client.list_backups(rig.policy)}


@pytest.mark.parametrize("login_failure", ["200", "401"])
def test_refused_login_is_an_auth_error_without_secrets(rig: Rig, login_failure: str) -> None:
    if rig.product.api is Api.COMMVAULT:
        rig.control("set_variant", {"login_failure": login_failure})
    elif login_failure == "200":
        pytest.skip("only commvault refuses a login with HTTP 200")
    secret_key = {"element": "clientSecret"}.get(rig.product.api.value, "password")
    wrong = "wrong-secret-value-42"
    settings = HttpSettings(
        base_url=rig.emulated_url, connection="main", timeout=5.0, backoff_base=0.0
    )
    auth = {**rig.emulated.credentials(), secret_key: wrong}
    client = backups.open_backup_api(rig.product.api, settings, auth)
    try:
        with pytest.raises(AuthError) as caught:
            client.list_backups(rig.policy)
    finally:
        client.close()
    text = str(caught.value)
    assert text.startswith("main: POST ")
    assert wrong not in text


def test_commvault_ready_api_token(rig: Rig) -> None:
    if rig.product.api is not Api.COMMVAULT:
        pytest.skip("a ready API token is a commvault feature")
    token = rig.control("create_api_token")["token"]
    settings = HttpSettings(base_url=rig.emulated_url, connection="cv", timeout=5.0)
    client = backups.open_backup_api(Api.COMMVAULT, settings, {"token": token})
    try:
        done = follow(rig, client, client.trigger(rig.policy))
        assert done.state is BackupState.SUCCEEDED
    finally:
        client.close()


def test_failed_newest_attempt_after_a_success_is_failing_with_the_message(rig: Rig) -> None:
    # Every product must list failed attempts, or a policy would only ever look overdue.
    rig.seed(age_seconds=30 * 3600)
    rig.control("fail_next_backup", {"message": "appliance disk full"})
    client = rig.make()
    follow(rig, client, client.trigger(rig.policy))
    status = policies.evaluate(rig.policy, client.list_backups(rig.policy), now=rig.now())
    assert status.state is policies.PolicyState.FAILING
    assert "appliance disk full" in (status.newest_failure_message or "")
    assert status.due
