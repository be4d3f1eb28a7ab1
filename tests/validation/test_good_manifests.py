"""Good manifests: ``converge validate`` says OK, and the values are what manifests.md promises."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from runs import CONNECTIONS, EXAMPLES, clean_environ, run_cli, run_process, write_files

from controller import validating

EXAMPLES_OK = "OK: 11 documents — 4 connections, 4 roleapps, 3 backup policies"


def roleapp(spec: str, name: str = "app") -> str:
    return f"apiVersion: converge/v1\nkind: RoleApp\nmetadata:\n  name: {name}\nspec:\n{spec}"


def test_examples_validate(workdir: Path) -> None:
    outcome = run_cli(str(EXAMPLES))
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (0, EXAMPLES_OK + "\n", "")


def test_examples_validate_in_a_real_process(workdir: Path) -> None:
    shutil.copytree(EXAMPLES, workdir / "manifests")
    outcome = run_process("manifests", cwd=workdir)
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (0, EXAMPLES_OK + "\n", "")


def test_unset_secrets_are_not_an_error_and_verbose_lists_them(workdir: Path) -> None:
    shutil.copytree(EXAMPLES, workdir / "manifests")
    outcome = run_cli("-v", "manifests")
    assert outcome.exit_code == 0
    assert outcome.stdout == EXAMPLES_OK + "\n"
    assert outcome.errors == [
        "Secret variables not set (plan and apply need them for real servers):",
        "  manifests/backups.yaml:39: spec.source.vcdaAppliance.password: "
        "environment variable VCDA_BACKUP_PASSWORD is not set",
        "  manifests/connections.yaml:16: spec.auth.password: "
        "environment variable ERA_PASSWORD is not set",
        "  manifests/connections.yaml:29: spec.auth.clientSecret: "
        "environment variable ELEMENT_CLIENT_SECRET is not set",
        "  manifests/connections.yaml:41: spec.auth.password: "
        "environment variable VCDA_PASSWORD is not set",
        "  manifests/connections.yaml:52: spec.auth.password: "
        "environment variable COMMVAULT_PASSWORD is not set",
    ]


def test_set_secrets_are_used_and_never_printed(workdir: Path) -> None:
    secrets = {
        "ERA_PASSWORD": "era-s3cret",
        "ELEMENT_CLIENT_SECRET": "element-s3cret",
        "VCDA_PASSWORD": "vcda-s3cret",
        "COMMVAULT_PASSWORD": "cv-s3cret",
        "VCDA_BACKUP_PASSWORD": "backup-s3cret",
    }
    outcome = run_cli("-v", str(EXAMPLES), env=secrets)
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (0, EXAMPLES_OK + "\n", "")
    manifests = validating.validate([EXAMPLES], environ=secrets)
    assert manifests.secret_values() == set(secrets.values())
    assert manifests.unset_secrets == ()
    shown = repr(manifests)  # records hide secrets from repr by hand (manifests._repr_without)
    for value in secrets.values():
        assert value not in shown


def test_variables_defaults_and_escapes(workdir: Path) -> None:
    write_files(
        workdir,
        {
            "connections.yaml": (
                "apiVersion: converge/v1\nkind: Connection\nmetadata: {name: era-main}\n"
                "spec:\n  api: era\n  url: ${ERA_URL:-sandbox}\n"
                "  concurrency: ${ERA_CONCURRENCY:-8}\n  rateLimit: ${ERA_RATE:-2.5}\n"
                "  tls:\n    verify: ${ERA_VERIFY:-false}\n"
            ),
            "app.yaml": roleapp(
                "  folder: ${APP_FOLDER}\n"
                "  title: ${TITLE:-Chat for support}\n"
                "  svcscriptcode: $${NOT_A_VARIABLE}\n"
                "  opts:\n    recv_timeout: ${TIMEOUT:-30}\n    comment: '${TIMEOUT:-30}'\n"
            ),
        },
    )
    environ = {"APP_FOLDER": "chat-operator", "ERA_CONCURRENCY": "16"}
    assert run_cli(env=environ).exit_code == 0
    manifests = validating.validate(["."], environ=environ)
    (era,) = manifests.connections
    assert (era.url, era.concurrency, era.rate_limit, era.tls.verify) == ("sandbox", 16, 2.5, False)
    (app,) = manifests.roleapps
    assert app.fields == {
        "folder": "chat-operator",
        "title": "Chat for support",
        "svcscriptcode": "${NOT_A_VARIABLE}",
        "opts": {"recv_timeout": 30, "comment": "30"},  # quoted: stays text
    }


def test_same_roleapp_name_on_two_era_connections(workdir: Path) -> None:
    write_files(
        workdir,
        {
            "connections.yaml": CONNECTIONS
            + "---\napiVersion: converge/v1\nkind: Connection\nmetadata: {name: era-dr}\n"
            "spec: {api: era, url: sandbox}\n",
            "apps.yaml": roleapp("  connection: era-main\n  folder: chat\n", name="chat")
            + "---\n"
            + roleapp("  connection: era-dr\n  folder: chat\n", name="chat"),
        },
    )
    outcome = run_cli()
    assert (outcome.exit_code, outcome.stderr) == (0, "")
    assert outcome.stdout == "OK: 7 documents — 5 connections, 2 roleapps, 0 backup policies\n"
    manifests = validating.validate(["."])
    assert [(r.connection, r.name) for r in manifests.roleapps] == [
        ("era-dr", "chat"),
        ("era-main", "chat"),
    ]
    assert manifests.roleapps[0].create_id != manifests.roleapps[1].create_id


def test_empty_documents_and_comments_are_fine(workdir: Path) -> None:
    write_files(
        workdir,
        {
            "connections.yaml": "---\n" + CONNECTIONS + "---\n---\n# nothing here\n---\n",
            "empty.yaml": "",
            "comments.yml": "# just a comment\n",
        },
    )
    outcome = run_cli()
    assert (outcome.exit_code, outcome.stderr) == (0, "")
    assert outcome.stdout == "OK: 4 documents — 4 connections, 0 roleapps, 0 backup policies\n"


def test_hidden_folders_are_not_manifests(workdir: Path) -> None:
    write_files(
        workdir,
        {"connections.yaml": CONNECTIONS, ".converge/junk.yaml": "- not: a manifest\n"},
    )
    assert run_cli().exit_code == 0


@pytest.mark.parametrize("archive", ["app", "app.zip", "APP.ZIP"])
def test_archive_a_folder_or_a_zip(workdir: Path, archive: str) -> None:
    write_files(workdir, {"connections.yaml": CONNECTIONS, "app/index.html": "<html/>"})
    with zipfile.ZipFile(workdir / "app.zip", "w") as zf:
        zf.writestr("index.html", "<html/>")
    (workdir / "APP.ZIP").write_bytes((workdir / "app.zip").read_bytes())
    write_files(workdir, {"team/app.yaml": roleapp(f"  folder: f\n  archive: ../{archive}\n")})
    outcome = run_cli()
    assert (outcome.exit_code, outcome.stderr) == (0, "")
    (app,) = validating.validate(["."]).roleapps
    assert app.archive == str((workdir / archive).resolve())


def test_every_optional_field(workdir: Path) -> None:
    write_files(
        workdir,
        {
            "connections.yaml": CONNECTIONS,
            "ca.pem": "-----BEGIN CERTIFICATE-----\n",
            "more.yaml": (
                "apiVersion: converge/v1\nkind: Connection\n"
                "metadata: {name: era-prod, labels: {env: prod}, annotations: {owner: me}}\n"
                "spec:\n  api: era\n  url: https://era.example/\n"
                "  auth: {domain: d, login: l, password: '${ERA_PASSWORD}'}\n"
                "  timeout: 1.5m\n  concurrency: 256\n  rateLimit: 0.5\n"
                "  tls: {verify: true, caFile: ca.pem}\n---\n"
                + roleapp(
                    "  connection: era-prod\n  id: 68F99CA9-016C-D352-E02F-50E54938780C\n"
                    "  folder: f\n  title: ''\n  roles: []\n  svcscriptcode: ''\n  opts: {}\n"
                    "  lifecycle: {preventDestroy: true, ignoreFields: [opts.x, title]}\n"
                )
                + "---\napiVersion: converge/v1\nkind: BackupPolicy\nmetadata: {name: p}\n"
                "spec:\n  schedule: '@daily'\n  timezone: Europe/Moscow\n  maxAge: 26h\n"
                "  retention: {maxAge: 30d}\n  wait: 0\n  suspend: true\n"
                "  source: {elementApplication: "
                "{applicationId: 3FA85F64-5717-4562-B3FC-2C963F66AFA6}}\n"
            ),
        },
    )
    outcome = run_cli()
    assert (outcome.exit_code, outcome.stderr) == (0, "")
    manifests = validating.validate(["."])
    prod = manifests.connection("era-prod")
    assert (prod.url, prod.timeout, prod.tls.ca_file) == (
        "https://era.example",
        90.0,
        str((workdir / "ca.pem").resolve()),
    )
    (app,) = [r for r in manifests.roleapps if r.connection == "era-prod"]
    assert app.id == "68f99ca9-016c-d352-e02f-50e54938780c"
    (policy,) = manifests.policies
    assert (policy.connection, policy.wait, policy.suspend) == ("element-main", 0.0, True)


def test_unset_secrets_are_checked_without_jsonschema(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # validate in a pull request runs without the secrets: their "" must not send the
    # Connections to jsonschema (~75 ms to import) only to drop its errors at those paths.
    def no_jsonschema(kind: object) -> None:
        raise AssertionError(f"jsonschema asked about a valid {kind}")

    monkeypatch.setattr(validating, "_validator", no_jsonschema)
    manifests = validating.validate([EXAMPLES], environ={})
    assert len(manifests.unset_secrets) == 5
    # The stand-in is for the check only: what was built still holds "" for each secret.
    era = next(c for c in manifests.connections if c.name == "era-main")
    assert era.auth["password"] == ""


def test_an_unset_secret_does_not_hide_another_error_of_its_document(workdir: Path) -> None:
    given = (EXAMPLES / "connections.yaml").read_text(encoding="utf-8")
    text = given.replace("concurrency: 8", "concurrency: -1", 1)
    assert text != given
    write_files(workdir, {"manifests/connections.yaml": text})
    outcome = run_cli("manifests")
    assert outcome.exit_code == 1
    assert any("spec.concurrency" in line for line in outcome.errors), outcome.errors
    assert not any("password" in line for line in outcome.errors), outcome.errors


def test_validate_without_secrets_never_imports_jsonschema(workdir: Path) -> None:
    shutil.copytree(EXAMPLES, workdir / "manifests")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "controller", "validate", "manifests"],
        cwd=workdir,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "controller.validating" in result.stderr
    assert " jsonschema\n" not in result.stderr
