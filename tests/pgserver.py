"""A throwaway PostgreSQL server for the test suite (used by ``tests/state/conftest.py``).

``start()`` finds the PostgreSQL binaries (``$PG_BIN``, ``pg_config --bindir``, ``PATH``,
then ``/usr/lib/postgresql/<newest>/bin``), runs ``initdb`` into a fresh temporary
directory and ``pg_ctl start -w`` on a free 127.0.0.1 port, with fsync off (the data dies
with the test session anyway). Authentication: the superuser ``postgres`` is trusted on
127.0.0.1 (the tests' admin connection), every other user needs a password (scram), so
URLs carry one and a wrong password is really refused. ``start()`` creates the user
``converge`` with password ``PASSWORD`` owning the database ``converge``.

PostgreSQL refuses to run as root: under root (containers, some CI runners) the data
directory is handed to the ``postgres`` OS user and every server binary runs through
``runuser -u postgres --``. ``stop()`` stops the server (immediate mode) and removes the
directory. ``PgUnavailable`` means there are no binaries at all (the only case the tests
may skip, and never when ``CI=true``); any other failure raises ``RuntimeError`` with the
server log's tail.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

__all__ = ["PASSWORD", "PgServer", "PgUnavailable", "find_bin_dir", "start", "stop"]

USER = "converge"
DATABASE = "converge"
# Distinctive so a test can assert it never appears in a message.
PASSWORD = "Pw-s3cret-4-tests"
SUPERUSER = "postgres"
OS_USER = "postgres"  # who runs the server when we are root

_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_COMMAND_TIMEOUT = 60.0


class PgUnavailable(Exception):
    """No PostgreSQL server binaries on this machine."""


@dataclasses.dataclass(frozen=True, slots=True)
class PgServer:
    """A running throwaway server."""

    host: str
    port: int
    base_dir: Path
    bin_dir: Path
    run_as: str | None  # OS user the server runs as, when we are root

    @property
    def password(self) -> str:
        return PASSWORD

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def url(self, database: str = DATABASE, *, password: str = PASSWORD, port: int = 0) -> str:
        """URL of the password-protected test user (wrong ``password``/``port`` for tests)."""
        return f"postgresql://{USER}:{password}@{self.host}:{port or self.port}/{database}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database owned by the test user; returns its URL."""
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {USER}')
        return self.url(name)


def find_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl; PgUnavailable if there is none."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    # Debian/Ubuntu (and GitHub's runners) keep the binaries off PATH, one dir per version.
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    raise PgUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found; set PG_BIN")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(args: list[str], run_as: str | None) -> subprocess.CompletedProcess[str]:
    command = ["runuser", "-u", run_as, "--", *args] if run_as else args
    return subprocess.run(
        command, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False, cwd="/"
    )


def _check(result: subprocess.CompletedProcess[str], what: str, log: Path | None = None) -> None:
    if result.returncode == 0:
        return
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(
        f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n{tail}"
    )


def start(*, host: str = "127.0.0.1") -> PgServer:
    """Start a fresh server with the test user and database; the caller must ``stop`` it."""
    bin_dir = find_bin_dir()
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(OS_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root, PostgreSQL needs a non-root OS user {OS_USER!r} to run as"
            ) from None
        run_as = OS_USER
    base_dir = Path(tempfile.mkdtemp(prefix="converge-pg-"))
    try:
        if run_as:
            os.chown(base_dir, account.pw_uid, account.pw_gid)
        server = PgServer(host=host, port=0, base_dir=base_dir, bin_dir=bin_dir, run_as=run_as)
        _check(
            _run(
                [
                    str(bin_dir / "initdb"),
                    "-D", str(server.data_dir),
                    "-U", SUPERUSER,
                    "--auth-local=trust", "--auth-host=trust",
                    "--encoding=UTF8", "--locale=C", "--no-sync",
                ],
                run_as,
            ),
            "initdb",
        )  # fmt: skip
        # Trust only the superuser (the tests' admin connection); the app user must
        # present its password, so "wrong password" is a real refusal.
        (server.data_dir / "pg_hba.conf").write_text(
            f"host all {SUPERUSER} {host}/32 trust\nhost all all {host}/32 scram-sha-256\n"
        )
        for _ in range(_START_ATTEMPTS):
            server = dataclasses.replace(server, port=_free_port())
            if _start_server(server):
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start; log: {base_dir / 'server.log'}")
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        return server
    except BaseException:
        _stop_dir(base_dir, bin_dir, run_as)
        raise


def _start_server(server: PgServer) -> bool:
    log = server.base_dir / "server.log"
    # The settings go into postgresql.auto.conf rather than the command line, to keep
    # runuser/pg_ctl quoting out of it. No unix socket: nothing may be left outside base_dir.
    (server.data_dir / "postgresql.auto.conf").write_text(
        f"listen_addresses = '{server.host}'\nport = {server.port}\n"
        "unix_socket_directories = ''\nfsync = off\nsynchronous_commit = off\n"
        "full_page_writes = off\nmax_connections = 100\n"
    )
    result = _run(
        [str(server.bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(server.data_dir),
         "-l", str(log)],
        server.run_as,
    )  # fmt: skip
    if result.returncode == 0:
        return True
    if log.exists() and "could not bind" in log.read_text(errors="replace"):
        return False  # the port was taken meanwhile: try another
    _check(result, "pg_ctl start", log)
    return False


def stop(server: PgServer) -> None:
    """Stop the server and remove its files."""
    _stop_dir(server.base_dir, server.bin_dir, server.run_as)


def _stop_dir(base_dir: Path, bin_dir: Path, run_as: str | None) -> None:
    data = base_dir / "data"
    if (data / "postmaster.pid").exists():
        _run([str(bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(data)], run_as)
    shutil.rmtree(base_dir, ignore_errors=True)
