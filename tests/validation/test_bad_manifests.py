"""Bad manifests: each case is the exact stderr ``converge validate`` must print, and exit 1.

Each case writes its files into an empty folder (beside ``connections.yaml``, one sandbox
connection per api, unless the case says otherwise), runs ``converge validate .`` through
click, and compares every stderr line: ``FILE:LINE: KEY: MESSAGE``, sorted by file, line
and key. The helpers below put ``spec:`` on line 5, so a case's first spec line is line 6.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from runs import CONNECTIONS, Outcome, run_cli, run_process, write_files


def _document(kind: str, name: str, spec: str) -> str:
    return f"apiVersion: converge/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"


def roleapp(spec: str, name: str = "app") -> str:
    return _document("RoleApp", name, spec)


def policy(spec: str, name: str = "pol") -> str:
    return _document("BackupPolicy", name, spec)


def connection(spec: str, name: str = "extra") -> str:
    return _document("Connection", name, spec)


VCDA_SOURCE = "  source:\n    vcdaAppliance:\n      password: ${VCDA_BACKUP_PASSWORD}\n"
SECRET = (
    "a secret must be an environment reference such as ${VAR} (with no default), never a literal"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Case:
    id: str
    files: Mapping[str, str | bytes]
    expected: tuple[str, ...]
    args: tuple[str, ...] = (".",)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    connections: bool = True  # write the shared connections.yaml beside the case's files
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None


CASES = [
    # ── missing keys ───────────────────────────────────────────────────────────────────
    Case(
        "missing-spec-folder",
        {"bad.yaml": roleapp("  title: x\n")},
        ("bad.yaml:5: spec.folder: required",),
    ),
    Case(
        "missing-metadata-name",
        {"bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nmetadata: {}\nspec: {folder: f}\n"},
        ("bad.yaml:3: metadata.name: required",),
    ),
    Case(
        "missing-metadata",
        {"bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nspec: {folder: f}\n"},
        ("bad.yaml:1: metadata: required",),
    ),
    Case(
        "missing-apiVersion",
        {"bad.yaml": "kind: RoleApp\nmetadata: {name: a}\nspec: {folder: f}\n"},
        ("bad.yaml:1: apiVersion: required",),
    ),
    Case(
        "missing-kind",
        {"bad.yaml": "apiVersion: converge/v1\nmetadata: {name: a}\nspec: {folder: f}\n"},
        ("bad.yaml:1: kind: required",),
    ),
    Case(
        "missing-spec",
        {"bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nmetadata: {name: a}\n"},
        ("bad.yaml:1: spec: required",),
    ),
    Case(
        "spec-null",
        {"bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nmetadata: {name: a}\nspec:\n"},
        ("bad.yaml:4: spec: must be a mapping, got null",),
    ),
    Case(
        "connection-missing-url",
        {"bad.yaml": connection("  api: era\n")},
        ("bad.yaml:5: spec.url: required",),
    ),
    # ── wrong types ────────────────────────────────────────────────────────────────────
    Case(
        "roles-a-string",
        {"bad.yaml": roleapp("  folder: f\n  roles: x\n")},
        ("bad.yaml:7: spec.roles: must be a list, got a string",),
    ),
    Case(
        "roles-items-not-strings",
        {"bad.yaml": roleapp("  folder: f\n  roles: [admin, 1]\n")},
        ("bad.yaml:7: spec.roles[1]: must be a string, got an integer",),
    ),
    Case(
        "roles-repeated",
        {"bad.yaml": roleapp("  folder: f\n  roles: [a, a]\n")},
        ("bad.yaml:7: spec.roles: must not repeat items",),
    ),
    Case(
        "concurrency-a-string",
        {"bad.yaml": connection("  api: era\n  url: sandbox\n  concurrency: many\n")},
        ("bad.yaml:8: spec.concurrency: must be an integer, got a string",),
    ),
    Case(
        "concurrency-quoted-default-stays-a-string",
        {"bad.yaml": connection('  api: era\n  url: sandbox\n  concurrency: "${N:-8}"\n')},
        ("bad.yaml:8: spec.concurrency: must be an integer, got a string",),
    ),
    Case(
        "folder-a-boolean",
        {"bad.yaml": roleapp("  folder: yes\n")},
        ("bad.yaml:6: spec.folder: must be a string, got a boolean",),
    ),
    Case(
        "metadata-a-list",
        {"bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nmetadata: [a]\nspec: {folder: f}\n"},
        ("bad.yaml:3: metadata: must be a mapping, got a list",),
    ),
    Case(
        "label-value-not-a-string",
        {
            "bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nmetadata: {name: a, labels: {a: 1}}\n"
            "spec: {folder: f}\n"
        },
        ("bad.yaml:3: metadata.labels.a: must be a string, got an integer",),
    ),
    Case(
        "url-not-a-string",
        {"bad.yaml": connection("  api: era\n  url: 5\n")},
        ("bad.yaml:7: spec.url: must be a string, got an integer",),
    ),
    Case(
        "timezone-not-a-string",
        {"bad.yaml": policy("  maxAge: 1d\n  timezone: 5\n" + VCDA_SOURCE)},
        ("bad.yaml:7: spec.timezone: must be a string, got an integer",),
    ),
    Case(
        "opts-a-list",
        {"bad.yaml": roleapp("  folder: f\n  opts: [1]\n")},
        ("bad.yaml:7: spec.opts: must be a mapping, got a list",),
    ),
    Case(
        "opts-a-string",
        {"bad.yaml": roleapp("  folder: f\n  opts: visible\n")},
        ("bad.yaml:7: spec.opts: must be a mapping, got a string",),
    ),
    Case(
        "source-a-string",
        {"bad.yaml": policy("  maxAge: 1d\n  source: vcdaAppliance\n")},
        ("bad.yaml:7: spec.source: must be a mapping, got a string",),
    ),
    Case(
        "commvault-auth-a-string",
        {"bad.yaml": connection("  api: commvault\n  url: https://cv.example\n  auth: token\n")},
        ("bad.yaml:8: spec.auth: must be a mapping, got a string",),
    ),
    Case(
        "id-not-a-uuid",
        {"bad.yaml": roleapp("  folder: f\n  id: 123\n")},
        ("bad.yaml:7: spec.id: must be a UUID such as 68f99ca9-016c-d352-e02f-50e54938780c",),
    ),
    # ── unknown keys and values ────────────────────────────────────────────────────────
    Case(
        "unknown-kind",
        {
            "bad.yaml": "apiVersion: converge/v1\nkind: Roleapp\nmetadata: {name: a}\nspec: {folder: f}\n"
        },
        (
            "bad.yaml:2: kind: unknown kind 'Roleapp' "
            "(expected one of Connection, RoleApp, BackupPolicy)",
        ),
    ),
    Case(
        "wrong-apiVersion",
        {
            "bad.yaml": "apiVersion: converge/v2\nkind: RoleApp\nmetadata: {name: a}\nspec: {folder: f}\n"
        },
        ("bad.yaml:1: apiVersion: must be converge/v1",),
    ),
    Case(
        "unknown-api",
        {"bad.yaml": connection("  api: jira\n  url: sandbox\n")},
        ("bad.yaml:6: spec.api: must be one of era, element, vcda, commvault",),
    ),
    Case(
        "integer-key",
        {
            "bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nmetadata: {name: a}\n"
            "spec: {folder: f, 1: x}\n"
        },
        ("bad.yaml:4: spec.1: unknown key",),
    ),
    Case(
        "mapping-as-key",
        {
            "bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nmetadata: {name: a}\n"
            "spec: {folder: f, ? [a]: 1}\n"
        },
        ("bad.yaml:4: spec: keys must be plain strings",),
    ),
    # ── names ──────────────────────────────────────────────────────────────────────────
    Case(
        "name-uppercase",
        {"bad.yaml": roleapp("  folder: f\n", name="Chat-Operator")},
        ("bad.yaml:4: metadata.name: must be 1-63 lowercase letters, digits and '-'",),
    ),
    Case(
        "name-too-long",
        {"bad.yaml": roleapp("  folder: f\n", name="a" * 64)},
        ("bad.yaml:4: metadata.name: must be 1-63 lowercase letters, digits and '-'",),
    ),
    Case(
        "name-not-a-string",
        {"bad.yaml": roleapp("  folder: f\n", name="123")},
        ("bad.yaml:4: metadata.name: must be 1-63 lowercase letters, digits and '-'",),
    ),
    Case(
        "duplicate-name-same-kind",
        {"bad.yaml": roleapp("  folder: f\n") + "---\n" + roleapp("  folder: g\n")},
        ("bad.yaml:11: metadata.name: duplicate name 'app' (first declared at bad.yaml:4)",),
    ),
    Case(
        # Only the first of two same-named roleapps is built, so only it is checked further.
        "duplicate-name-is-not-checked-further",
        {
            "bad.yaml": roleapp("  folder: f\n")
            + "---\n"
            + roleapp("  folder: g\n  lifecycle:\n    ignoreFields: [titel]\n")
        },
        ("bad.yaml:11: metadata.name: duplicate name 'app' (first declared at bad.yaml:4)",),
    ),
    Case(
        "duplicate-connection-across-files",
        {"more/era.yaml": connection("  api: era\n  url: sandbox\n", name="era-main")},
        (
            "more/era.yaml:4: metadata.name: duplicate name 'era-main' "
            "(first declared at connections.yaml:3)",
        ),
    ),
    # ── schedules and durations ────────────────────────────────────────────────────────
    Case(
        "cron-out-of-range",
        {"bad.yaml": policy("  schedule: '61 * * * *'\n" + VCDA_SOURCE)},
        (
            "bad.yaml:6: spec.schedule: invalid cron expression '61 * * * *' "
            "(minute hour day month weekday)",
        ),
    ),
    Case(
        "cron-on-a-date-that-never-comes",  # once an internal error at plan time
        {"bad.yaml": policy("  schedule: '0 3 31 11 *'\n" + VCDA_SOURCE)},
        (
            "bad.yaml:6: spec.schedule: '0 3 31 11 *' never fires: no date matches it "
            "(such as 30 February)",
        ),
    ),
    Case(
        "cron-words",
        {"bad.yaml": policy("  schedule: every night\n" + VCDA_SOURCE)},
        (
            "bad.yaml:6: spec.schedule: invalid cron expression 'every night' "
            "(minute hour day month weekday)",
        ),
    ),
    Case(
        "cron-with-seconds",
        {"bad.yaml": policy("  schedule: 0 0 2 * * *\n" + VCDA_SOURCE)},
        (
            "bad.yaml:6: spec.schedule: invalid cron expression '0 0 2 * * *' "
            "(minute hour day month weekday)",
        ),
    ),
    Case(
        "timezone-unknown",
        {"bad.yaml": policy("  maxAge: 1d\n  timezone: Mars/Olympus\n" + VCDA_SOURCE)},
        ("bad.yaml:7: spec.timezone: unknown IANA timezone 'Mars/Olympus'",),
    ),
    Case(
        "timezone-a-path",
        {"bad.yaml": policy("  maxAge: 1d\n  timezone: /etc/passwd\n" + VCDA_SOURCE)},
        ("bad.yaml:7: spec.timezone: unknown IANA timezone '/etc/passwd'",),
    ),
    Case(
        "maxAge-3-days",
        {"bad.yaml": policy("  maxAge: 3 days\n" + VCDA_SOURCE)},
        ("bad.yaml:6: spec.maxAge: must be a duration such as 90s, 15m, 26h or 7d",),
    ),
    Case(
        "maxAge-a-bare-number",
        {"bad.yaml": policy("  maxAge: 3\n" + VCDA_SOURCE)},
        ("bad.yaml:6: spec.maxAge: must be a duration such as 90s, 15m, 26h or 7d",),
    ),
    Case(
        "wait-negative",
        {"bad.yaml": policy("  maxAge: 1d\n  wait: -5m\n" + VCDA_SOURCE)},
        ("bad.yaml:7: spec.wait: must be a duration such as 90s, 15m, 26h or 7d",),
    ),
    Case(
        "timeout-in-years",
        {"bad.yaml": connection("  api: era\n  url: sandbox\n  timeout: 1y\n")},
        ("bad.yaml:8: spec.timeout: must be a duration such as 90s, 15m, 26h or 7d",),
    ),
    Case(
        "neither-schedule-nor-maxAge",
        {"bad.yaml": policy(VCDA_SOURCE)},
        ("bad.yaml:5: spec: needs schedule, maxAge or both",),
    ),
    Case(
        "keepLast-0",
        {"bad.yaml": policy("  maxAge: 1d\n  retention: {keepLast: 0}\n" + VCDA_SOURCE)},
        ("bad.yaml:7: spec.retention.keepLast: must be at least 1",),
    ),
    Case(
        "retention-empty",
        {"bad.yaml": policy("  maxAge: 1d\n  retention: {}\n" + VCDA_SOURCE)},
        ("bad.yaml:7: spec.retention: must not be empty",),
    ),
    Case(
        "retention-on-commvault",
        {
            "bad.yaml": policy(
                "  maxAge: 1d\n  retention: {keepLast: 3}\n  source:\n    commvaultDynamoDB:\n"
                "      {clientName: aws, instanceName: DynamoDB, subclientId: 1}\n"
            )
        },
        (
            "bad.yaml:7: spec.retention: not supported for commvault "
            "(Commvault applies its own retention)",
        ),
    ),
    # ── secrets ────────────────────────────────────────────────────────────────────────
    Case(
        "literal-password",
        {
            "bad.yaml": connection(
                "  api: era\n  url: https://era.example\n"
                "  auth: {domain: d, login: l, password: hunter2}\n"
            )
        },
        (f"bad.yaml:8: spec.auth.password: {SECRET}",),
    ),
    Case(
        "literal-clientSecret",
        {
            "bad.yaml": connection(
                "  api: element\n  url: sandbox\n  auth:\n    clientId: converge\n"
                "    clientSecret: hunter2\n"
            )
        },
        (f"bad.yaml:10: spec.auth.clientSecret: {SECRET}",),
    ),
    Case(
        "literal-token",
        {
            "bad.yaml": connection(
                "  api: commvault\n  url: https://cv.example\n  auth:\n    token: abc\n"
            )
        },
        (f"bad.yaml:9: spec.auth.token: {SECRET}",),
    ),
    Case(
        "literal-vcda-backup-password",
        {
            "bad.yaml": policy(
                "  maxAge: 1d\n  source:\n    vcdaAppliance:\n      password: hunter2\n"
            )
        },
        (f"bad.yaml:9: spec.source.vcdaAppliance.password: {SECRET}",),
    ),
    Case(
        "secret-with-a-default",
        {
            "bad.yaml": connection(
                "  api: vcda\n  url: sandbox\n  auth:\n    type: localUser\n    user: admin\n"
                "    password: ${VCDA_PASSWORD:-hunter2}\n"
            )
        },
        (f"bad.yaml:11: spec.auth.password: {SECRET}",),
    ),
    Case(
        "secret-escaped-reference-is-a-literal",
        {
            "bad.yaml": connection(
                "  api: era\n  url: sandbox\n  auth: {domain: d, login: l, password: '$${ERA_PASSWORD}'}\n"
            )
        },
        (f"bad.yaml:8: spec.auth.password: {SECRET}",),
    ),
    Case(
        "secret-with-text-around-a-reference",
        {
            "bad.yaml": connection(
                "  api: era\n  url: sandbox\n  auth: {domain: d, login: l, password: 'pre-${P}'}\n"
            )
        },
        (f"bad.yaml:8: spec.auth.password: {SECRET}",),
        env={"P": "x"},
    ),
    # ── connections and references ─────────────────────────────────────────────────────
    Case(
        "unknown-connection",
        {"bad.yaml": roleapp("  connection: era-mian\n  folder: f\n")},
        ("bad.yaml:6: spec.connection: unknown connection 'era-mian'",),
    ),
    Case(
        "wrong-api-for-the-source",
        {"bad.yaml": policy("  connection: era-main\n  maxAge: 1d\n" + VCDA_SOURCE)},
        (
            "bad.yaml:9: spec.source.vcdaAppliance: "
            "vcdaAppliance needs a connection with api vcda; 'era-main' has api era",
        ),
    ),
    Case(
        "wrong-api-for-the-source-and-more",
        {"bad.yaml": policy("  connection: era-main\n  timezone: Moscow\n" + VCDA_SOURCE)},
        (
            "bad.yaml:5: spec: needs schedule, maxAge or both",
            "bad.yaml:7: spec.timezone: unknown IANA timezone 'Moscow'",
            "bad.yaml:9: spec.source.vcdaAppliance: "
            "vcdaAppliance needs a connection with api vcda; 'era-main' has api era",
        ),
    ),
    Case(
        "roleapp-on-a-vcda-connection",
        {"bad.yaml": roleapp("  connection: vcda-main\n  folder: f\n")},
        (
            "bad.yaml:6: spec.connection: connection 'vcda-main' has api vcda; a RoleApp needs api era",
        ),
    ),
    Case(
        "two-era-connections-and-no-connection",
        {
            "bad.yaml": connection("  api: era\n  url: sandbox\n", name="era-two")
            + "---\n"
            + roleapp("  folder: f\n")
        },
        (
            "bad.yaml:13: spec.connection: required: several era connections exist (era-main, era-two)",
        ),
    ),
    Case(
        # The candidates are worked out once per api and reused: each document still gets
        # its own problem, and a policy of another api still finds its one connection.
        "two-era-connections-and-several-documents-without-one",
        {
            "bad.yaml": connection("  api: era\n  url: sandbox\n", name="era-two")
            + "---\n"
            + roleapp("  folder: f\n")
            + "---\n"
            + roleapp("  folder: g\n", name="other")
            + "---\n"
            + policy("  maxAge: 1d\n" + VCDA_SOURCE)
        },
        (
            "bad.yaml:13: spec.connection: required: several era connections exist (era-main, era-two)",
            "bad.yaml:20: spec.connection: required: several era connections exist (era-main, era-two)",
        ),
    ),
    Case(
        "roleapp-with-no-era-connection",
        {"bad.yaml": roleapp("  folder: f\n")},
        ("bad.yaml:5: spec: a RoleApp needs a Connection with api: era; none is declared",),
        connections=False,
    ),
    Case(
        "url-neither-http-nor-sandbox",
        {
            "bad.yaml": connection(
                "  api: era\n  url: ftp://era.example\n  auth: {domain: d, login: l, password: '${P}'}\n"
            )
        },
        ("bad.yaml:7: spec.url: must be an http:// or https:// URL, or sandbox",),
    ),
    Case(
        "auth-missing-for-a-real-url",
        {"bad.yaml": connection("  api: era\n  url: https://era.example\n")},
        ("bad.yaml:5: spec.auth: required unless url is sandbox",),
    ),
    Case(
        "auth-missing-a-key",
        {
            "bad.yaml": connection(
                "  api: era\n  url: https://era.example\n  auth: {login: l, password: '${P}'}\n"
            )
        },
        ("bad.yaml:8: spec.auth.domain: required",),
    ),
    Case(
        "auth-key-of-another-api",
        {
            "bad.yaml": connection(
                "  api: element\n  url: sandbox\n  auth:\n    clientId: c\n"
                "    clientSecret: ${S}\n    login: l\n"
            )
        },
        ("bad.yaml:11: spec.auth.login: unknown key",),
    ),
    Case(
        "commvault-auth-neither-password-nor-token",
        {
            "bad.yaml": connection(
                "  api: commvault\n  url: https://cv.example\n  auth: {username: u}\n"
            )
        },
        ("bad.yaml:8: spec.auth: needs username and password, or token",),
    ),
    Case(
        "tls-caFile-missing",
        {"bad.yaml": connection("  api: era\n  url: sandbox\n  tls: {caFile: certs/ca.pem}\n")},
        ("bad.yaml:8: spec.tls.caFile: certs/ca.pem does not exist (relative to bad.yaml)",),
    ),
    # ── sources ────────────────────────────────────────────────────────────────────────
    Case(
        "source-with-two-keys",
        {
            "bad.yaml": policy(
                "  maxAge: 1d\n  source:\n    vcdaAppliance: {password: '${P}'}\n"
                "    elementApplication: {applicationId: 3fa85f64-5717-4562-b3fc-2c963f66afa6}\n"
            )
        },
        (
            "bad.yaml:7: spec.source: "
            "needs exactly one of elementApplication, vcdaAppliance, commvaultDynamoDB",
        ),
    ),
    Case(
        "source-empty",
        {"bad.yaml": policy("  maxAge: 1d\n  source: {}\n")},
        (
            "bad.yaml:7: spec.source: "
            "needs exactly one of elementApplication, vcdaAppliance, commvaultDynamoDB",
        ),
    ),
    Case(
        "source-unknown-key",
        {"bad.yaml": policy("  maxAge: 1d\n  source:\n    s3Bucket: {name: b}\n")},
        ("bad.yaml:8: spec.source.s3Bucket: unknown key",),
    ),
    Case(
        "element-application-id-not-a-uuid",
        {
            "bad.yaml": policy(
                "  maxAge: 1d\n  source:\n    elementApplication: {applicationId: crm}\n"
            )
        },
        (
            "bad.yaml:8: spec.source.elementApplication.applicationId: "
            "must be a UUID such as 68f99ca9-016c-d352-e02f-50e54938780c",
        ),
    ),
    Case(
        "commvault-backup-level-unknown",
        {
            "bad.yaml": policy(
                "  maxAge: 1d\n  source:\n    commvaultDynamoDB:\n      clientName: aws\n"
                "      instanceName: DynamoDB\n      subclientId: 1\n      backupLevel: weekly\n"
            )
        },
        (
            "bad.yaml:12: spec.source.commvaultDynamoDB.backupLevel: "
            "must be one of FULL, INCREMENTAL, DIFFERENTIAL, SYNTHETIC_FULL",
        ),
    ),
    # ── roleapp fields ─────────────────────────────────────────────────────────────────
    Case(
        "attachment_info-set-by-the-user",
        {
            "bad.yaml": roleapp(
                "  folder: f\n  opts: {recv_timeout: 30, attachment_info: {hasha: x}}\n"
            )
        },
        ("bad.yaml:7: spec.opts.attachment_info: owned by the server; remove it",),
    ),
    Case(
        "ignoreFields-unknown-field",
        {
            "bad.yaml": roleapp(
                "  folder: f\n  lifecycle:\n    ignoreFields: [opts.comment, titel]\n"
            )
        },
        (
            "bad.yaml:8: spec.lifecycle.ignoreFields[1]: unknown field 'titel' "
            "(one of folder, title, roles, svcscriptcode, opts, or opts.<key>)",
        ),
    ),
    Case(
        "archive-missing",
        {"bad.yaml": roleapp("  folder: f\n  archive: apps/missing.zip\n")},
        ("bad.yaml:7: spec.archive: apps/missing.zip does not exist (relative to bad.yaml)",),
    ),
    Case(
        "archive-not-a-zip",
        {"bad.yaml": roleapp("  folder: f\n  archive: app.tar.gz\n"), "app.tar.gz": b"\x1f\x8b"},
        ("bad.yaml:7: spec.archive: must be a .zip file or a directory",),
    ),
    Case(
        "archive-a-zip-name-on-something-else",
        {"bad.yaml": roleapp("  folder: f\n  archive: app.zip\n"), "app.zip": "<html></html>\n"},
        ("bad.yaml:7: spec.archive: app.zip is not a zip archive",),
    ),
    Case(
        "archive-relative-to-the-manifest-not-the-cwd",
        {"team/bad.yaml": roleapp("  folder: f\n  archive: app.zip\n"), "app.zip": b"PK"},
        ("team/bad.yaml:7: spec.archive: app.zip does not exist (relative to team/bad.yaml)",),
    ),
    # ── environment variables ──────────────────────────────────────────────────────────
    Case(
        "unset-variable-in-a-plain-field",
        {"bad.yaml": roleapp("  folder: ${APP_FOLDER}\n")},
        ("bad.yaml:6: spec.folder: environment variable APP_FOLDER is not set",),
    ),
    Case(
        "unset-variable-inside-text",
        {"bad.yaml": roleapp("  folder: f\n  title: Chat for ${TEAM}\n")},
        ("bad.yaml:7: spec.title: environment variable TEAM is not set",),
    ),
    Case(
        "unset-variable-in-a-connection-url",
        {"bad.yaml": connection("  api: era\n  url: ${ERA_URL}\n")},
        ("bad.yaml:7: spec.url: environment variable ERA_URL is not set",),
    ),
    Case(
        "unset-variable-in-an-integer-field",
        {"bad.yaml": connection("  api: era\n  url: sandbox\n  concurrency: ${ERA_CONCURRENCY}\n")},
        ("bad.yaml:8: spec.concurrency: environment variable ERA_CONCURRENCY is not set",),
    ),
    Case(
        "unset-variable-in-a-uuid-field",
        {"bad.yaml": roleapp("  folder: f\n  id: ${APP_ID}\n")},
        ("bad.yaml:7: spec.id: environment variable APP_ID is not set",),
    ),
    # ── YAML and files ─────────────────────────────────────────────────────────────────
    Case(
        "yaml-bad-indentation",
        {"bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nmetadata:\n  name: a\n   x: 1\n"},
        ("bad.yaml:5: invalid YAML: mapping values are not allowed in this context",),
    ),
    Case(
        "yaml-tab-indentation",
        {"bad.yaml": "apiVersion: converge/v1\nkind: RoleApp\nmetadata:\n\tname: a\n"},
        ("bad.yaml:4: invalid YAML: found character that cannot start any token",),
    ),
    Case(
        "yaml-duplicate-key",
        {"bad.yaml": roleapp("  folder: f\n  title: t\n  folder: g\n")},
        ("bad.yaml:8: spec.folder: duplicate key",),
    ),
    Case(
        "document-a-list",
        {"bad.yaml": "- apiVersion: converge/v1\n- kind: RoleApp\n"},
        ("bad.yaml:1: a manifest must be a mapping, got a list",),
    ),
    Case(
        "document-a-scalar",
        {"bad.yaml": roleapp("  folder: f\n") + "---\njust some text\n"},
        ("bad.yaml:8: a manifest must be a mapping, got a string",),
    ),
    Case(
        "binary-garbage",
        {"bad.yaml": b"apiVersion: converge/v1\n\x00\x01\x02\xff\xfe"},
        ("bad.yaml:2: cannot read: not UTF-8 text",),
    ),
    Case(
        "nul-byte",
        {"bad.yaml": b"apiVersion: converge/v1\nkind: Role\x00App\n"},
        ("bad.yaml:2: cannot read: binary data (NUL byte)",),
    ),
    Case(
        "empty-directory",
        {},
        ("empty: no *.yaml or *.yml manifests found",),
        args=("empty",),
        connections=False,
        setup=lambda root, _: (root / "empty").mkdir(),
    ),
    Case(
        "path-that-does-not-exist",
        {},
        ("nowhere.yaml: no such file or directory",),
        args=("connections.yaml", "nowhere.yaml"),
    ),
    Case(
        "broken-symlink-in-a-folder",  # skipped silently, its objects would look deleted
        {"app.yaml": roleapp("  folder: f\n")},
        ("team/gone.yaml: cannot read: broken symbolic link",),
        setup=lambda root, _: _broken_symlink(root / "team" / "gone.yaml"),
    ),
    Case(
        "broken-symlink-given",
        {},
        ("gone.yaml: cannot read: broken symbolic link",),
        args=("connections.yaml", "gone.yaml"),
        setup=lambda root, _: _broken_symlink(root / "gone.yaml"),
    ),
    Case(
        "fifo-in-a-folder",
        {"app.yaml": roleapp("  folder: f\n")},
        ("pipe.yaml: cannot read: not a regular file",),
        setup=lambda root, _: os.mkfifo(root / "pipe.yaml"),
    ),
    Case(
        "fifo-given",
        {},
        ("pipe.yml: cannot read: not a regular file",),
        args=("connections.yaml", "pipe.yml"),
        setup=lambda root, _: os.mkfifo(root / "pipe.yml"),
    ),
    Case(
        "unreadable-file",
        {"bad.yaml": roleapp("  folder: f\n")},
        ("bad.yaml: cannot read: Permission denied",),
        # We run as root, where chmod 000 changes nothing: refuse the read itself.
        setup=lambda root, monkeypatch: _refuse_reading(root / "bad.yaml", monkeypatch),
    ),
    # ── odd values that once escaped as internal errors ───────────────────────────────
    Case(
        "key-with-a-line-break",  # printed raw, it split the error over two lines
        {"bad.yaml": roleapp('  folder: f\n  "\\r": x\n')},
        ("bad.yaml:7: spec['\\r']: unknown key",),
    ),
    Case(
        "empty-key",
        {"bad.yaml": roleapp('  folder: f\n  "": x\n')},
        ("bad.yaml:7: spec['']: unknown key",),
    ),
    Case(
        "archive-with-a-line-break",
        {"bad.yaml": roleapp('  folder: f\n  archive: "app\\n.zip"\n')},
        ("bad.yaml:7: spec.archive: 'app\\n.zip' does not exist (relative to bad.yaml)",),
    ),
    Case(
        "kind-a-list",
        {"bad.yaml": "apiVersion: converge/v1\nkind: [RoleApp]\nmetadata: {name: a}\n"},
        ("bad.yaml:2: kind: must be one of Connection, RoleApp, BackupPolicy, got a list",),
    ),
    Case(
        "metadata-null-beside-an-unset-secret",
        {
            "bad.yaml": "apiVersion: converge/v1\nkind: Connection\nmetadata:\nspec:\n"
            "  api: era\n  url: https://era.example\n"
            "  auth: {domain: d, login: l, password: '${ERA_PASSWORD}'}\n"
        },
        ("bad.yaml:3: metadata: must be a mapping, got null",),
    ),
    Case(
        "archive-with-a-nul-character",
        {"bad.yaml": roleapp('  folder: f\n  archive: "app\\0.zip"\n')},
        ("bad.yaml:7: spec.archive: not a usable path: embedded null byte",),
    ),
    Case(
        "archive-name-too-long",
        {"bad.yaml": roleapp(f"  folder: f\n  archive: {'a' * 300}.zip\n")},
        ("bad.yaml:7: spec.archive: not a usable path: File name too long",),
    ),
    Case(
        "archive-a-symlink-loop",
        {"bad.yaml": roleapp("  folder: f\n  archive: loop\n")},
        ("bad.yaml:7: spec.archive: not a usable path: symbolic link loop",),
        setup=lambda root, _: _symlink_loop(root / "loop"),
    ),
    Case(
        "timezone-a-directory-of-zones",
        {"bad.yaml": policy("  maxAge: 1d\n  timezone: Europe\n" + VCDA_SOURCE)},
        ("bad.yaml:7: spec.timezone: unknown IANA timezone 'Europe'",),
    ),
    Case(
        "timezone-name-too-long",
        {"bad.yaml": policy(f"  maxAge: 1d\n  timezone: {'a' * 300}\n" + VCDA_SOURCE)},
        (f"bad.yaml:7: spec.timezone: unknown IANA timezone '{'a' * 300}'",),
    ),
    Case(
        "nested-very-deeply",  # libyaml's composer recurses in C: this once killed Python
        {"bad.yaml": roleapp("  folder: f\n  opts: " + "[" * 100_000 + "]" * 100_000 + "\n")},
        ("bad.yaml:7: nested deeper than 64 levels",),
    ),
    Case(
        "nested-deeper-than-the-limit",
        {
            "bad.yaml": roleapp(
                "  folder: f\n  opts:\n"
                + "".join(f"{'  ' * (i + 2)}k{i}:\n" for i in range(70))
                + "x\n"
            )
        },
        ("bad.yaml:70: nested deeper than 64 levels",),
    ),
    Case(
        "alias-of-itself",
        {"bad.yaml": roleapp("  folder: f\n  opts: &loop {again: *loop}\n")},
        ("bad.yaml:7: nested deeper than 64 levels",),
    ),
    Case(
        "alias-bomb",
        {
            "bad.yaml": "".join(
                f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'x'] * 10)}]\n" for i in range(9)
            )
        },
        ("bad.yaml:1: more than 100000 values once aliases are expanded",),
    ),
    # ── numbers JSON cannot carry ──────────────────────────────────────────────────────
    Case(
        "rate-limit-not-a-number",  # said once: not again as "must be a number, got a string"
        {"bad.yaml": connection("  api: era\n  url: sandbox\n  rateLimit: .nan\n")},
        (
            "bad.yaml:8: spec.rateLimit: '.nan' is not a finite number (JSON has no NaN or infinity)",
        ),
    ),
    Case(
        "opts-infinite-or-too-big",
        {"bad.yaml": roleapp("  folder: f\n  opts: {ratio: -.inf, big: 1.0e+400, odd: [.NaN]}\n")},
        (
            "bad.yaml:7: spec.opts.big: '1.0e+400' is not a finite number (JSON has no NaN or infinity)",
            "bad.yaml:7: spec.opts.odd[0]: '.NaN' is not a finite number (JSON has no NaN or infinity)",
            "bad.yaml:7: spec.opts.ratio: '-.inf' is not a finite number (JSON has no NaN or infinity)",
        ),
    ),
    Case(
        "max-age-infinite",  # the refused text must not reach the duration parser either
        {"bad.yaml": policy("  maxAge: .inf\n" + VCDA_SOURCE)},
        ("bad.yaml:6: spec.maxAge: '.inf' is not a finite number (JSON has no NaN or infinity)",),
    ),
    Case(
        "rate-limit-from-a-variable-too-big-for-a-float",
        {"bad.yaml": connection("  api: era\n  url: sandbox\n  rateLimit: ${RATE}\n")},
        ("bad.yaml:8: spec.rateLimit: must be a number, got a string",),
        env={"RATE": "1e400"},
    ),
    Case(
        "invalid-tag-said-once",
        {"bad.yaml": connection("  api: era\n  url: sandbox\n  concurrency: !!int abc\n")},
        ("bad.yaml:8: spec.concurrency: invalid YAML: 'abc' is not a valid !!int",),
    ),
    # ── several problems at once ───────────────────────────────────────────────────────
    Case(
        "many-errors-in-one-file-all-printed-sorted",
        {
            "bad.yaml": (
                "apiVersion: converge/v1\nkind: RoleApp\nmetadata:\n  name: Bad_Name\nspec:\n"
                "  opts: {attachment_info: 1}\n  roles: x\n  foldr: y\n"
            )
        },
        (
            "bad.yaml:4: metadata.name: must be 1-63 lowercase letters, digits and '-'",
            "bad.yaml:5: spec.folder: required",
            "bad.yaml:6: spec.opts.attachment_info: owned by the server; remove it",
            "bad.yaml:7: spec.roles: must be a list, got a string",
            "bad.yaml:8: spec.foldr: unknown key",
        ),
    ),
    Case(
        "errors-across-files-sorted-by-file-then-line",
        {
            "z.yaml": roleapp("  folder: f\n  roles: x\n", name="z"),
            "a.yaml": policy("  maxAge: soon\n" + VCDA_SOURCE),
            "m/b.yaml": roleapp("  folder: f\n", name="B"),
            "m/c.yaml": roleapp("  folder: f\n  roles: [a]\n  svcscriptcode: 1\n", name="c"),
        },
        (
            "a.yaml:6: spec.maxAge: must be a duration such as 90s, 15m, 26h or 7d",
            "m/b.yaml:4: metadata.name: must be 1-63 lowercase letters, digits and '-'",
            "m/c.yaml:8: spec.svcscriptcode: must be a string, got an integer",
            "z.yaml:7: spec.roles: must be a list, got a string",
        ),
    ),
    Case(
        "errors-in-three-documents-sorted-by-line-as-numbers",
        {"bad.yaml": "---\n".join(roleapp("  roles: x\n", name=f"a{i}") for i in range(3))},
        (
            "bad.yaml:5: spec.folder: required",
            "bad.yaml:6: spec.roles: must be a list, got a string",
            "bad.yaml:12: spec.folder: required",
            "bad.yaml:13: spec.roles: must be a list, got a string",
            "bad.yaml:19: spec.folder: required",
            "bad.yaml:20: spec.roles: must be a list, got a string",
        ),
    ),
]


def _broken_symlink(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.with_name("renamed.yaml"))


def _symlink_loop(path: Path) -> None:
    path.symlink_to(path.with_name("loop-back"))
    path.with_name("loop-back").symlink_to(path)


def _refuse_reading(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_bytes = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self.resolve() == path.resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)


LINE = re.compile(r"^(?P<file>[^:]+)(?::(?P<line>\d+))?: .+")


def _assert_reported(outcome: Outcome, expected: tuple[str, ...]) -> None:
    assert "Traceback" not in outcome.stdout + outcome.stderr
    assert outcome.errors == list(expected), outcome.stderr
    assert outcome.exit_code == 1
    assert outcome.stdout == ""
    # Sorted by file, then by line as a number (so line 9 comes before line 10).
    where = []
    for line in outcome.errors:
        match = LINE.match(line)
        assert match, line
        where.append((match["file"], int(match["line"] or 0)))
    assert where == sorted(where)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_manifest(case: Case, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if case.connections:
        write_files(workdir, {"connections.yaml": CONNECTIONS})
    write_files(workdir, case.files)
    if case.setup:
        case.setup(workdir, monkeypatch)
    _assert_reported(run_cli(*case.args, env=case.env), case.expected)


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 30


# In a real process, through the console script: what a terminal or a CI log would show.
PROCESS_CASES = [
    "nested-very-deeply",
    "yaml-bad-indentation",
    "binary-garbage",
    "literal-password",
    "many-errors-in-one-file-all-printed-sorted",
    "errors-across-files-sorted-by-file-then-line",
    "path-that-does-not-exist",
]


@pytest.mark.parametrize("case_id", PROCESS_CASES)
def test_bad_manifest_in_a_real_process(case_id: str, workdir: Path) -> None:
    (case,) = [c for c in CASES if c.id == case_id]
    assert case.setup is None
    if case.connections:
        write_files(workdir, {"connections.yaml": CONNECTIONS})
    write_files(workdir, case.files)
    _assert_reported(run_process(*case.args, cwd=workdir, env=case.env), case.expected)
