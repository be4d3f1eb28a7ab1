"""The benchmark suite: the real ``converge`` CLI against the emulator, next to a lower bound.

Run by hand or in CI: ``.venv/bin/python benchmarks/run.py [--quick] [--json FILE]``.
Not a test: nothing here fails on a slow machine; it prints what it measured.

How it measures, and why:

1. The emulator runs as its own process (``converge emulator --latency 5ms --page-cap 500
   --data DIR``), so it never shares a GIL with the converge being measured.
2. Each scenario is seeded over the control plane, then ``converge`` runs as a subprocess,
   as a user runs it. Wall time is from spawn to exit; peak memory is the child's own
   ``ru_maxrss`` from ``os.wait4`` (per child, unlike ``RUSAGE_CHILDREN``'s running max);
   HTTP requests are the emulator's ``stats`` count before and after.
3. The lower bound of a scenario is the round trips it truly needs, laid out as the
   allowed concurrency permits (serial ones one after another, parallel ones in rounds of
   ``concurrency``), times the latency, plus process start-up (``converge --version``,
   timed beside each run of the scenario).
   ``ratio`` is wall time over that bound: 1.0 would be a converge with no CPU cost at all.
4. Each scenario runs ``--repeat`` times (5) from the same starting point; medians reported
   (five, not three: on a shared VM one slow run in three moves a median by 10-20%).
5. converge's modules are compiled to bytecode first, as an installed package's are: with
   PYTHONDONTWRITEBYTECODE set, an editable install would otherwise recompile every run.
6. ``target`` is issue 7's for the scenario (e.g. 2x the network bound plus start-up), and
   ``met`` also asks for peak memory under 200 MB. ``server cpu`` is what the emulator spent
   meanwhile: it shares the machine, so on 2 cores its work competes with converge's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lean_client

LATENCY = 0.005  # seconds the emulator adds to every API call
PAGE_CAP = 500  # the emulator's largest roleapps page
ERA_CONCURRENCY = 8  # the Connection default: requests in flight per connection
APPLY_PARALLELISM = 16
FILES = 100  # manifests are spread over this many files

SECRETS = {
    "ERA_PASSWORD": "sandbox-era-pass",
    "ELEMENT_CLIENT_SECRET": "sandbox-element-secret",
    "VCDA_PASSWORD": "sandbox-vcda-pass",
    "COMMVAULT_PASSWORD": "sandbox-commvault-pass",
    "VCDA_BACKUP_PASSWORD": "Bench-backup-pass-1",
}
# The era-main Connection's account (CONNECTIONS), as the lean client logs in with it.
ERA_LOGIN = {"domain": "sandbox.era", "login": "converge", "pwd": SECRETS["ERA_PASSWORD"]}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    roleapps: int  # scenarios 1, 2, 5, 6
    writes: int  # scenarios 3 and 4
    policies: int  # scenario 5
    repeat: int


FULL = Sizes(roleapps=10_000, writes=1_000, policies=50, repeat=5)
QUICK = Sizes(roleapps=1_000, writes=100, policies=6, repeat=1)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """Round trips a scenario truly needs: ``serial`` one after another, then ``rounds``."""

    serial: int = 0
    parallel: tuple[tuple[int, int], ...] = ()  # (requests, concurrency), phase after phase
    needed: int | None = None  # requests, when they are not serial + parallel (drift)

    @property
    def requests(self) -> int:
        if self.needed is not None:
            return self.needed
        return self.serial + sum(n for n, _ in self.parallel)

    def seconds(self, latency: float) -> float:
        rounds = self.serial + sum(math.ceil(n / c) for n, c in self.parallel if n)
        return rounds * latency


MEMORY_TARGET_MB = 200  # every scenario, at 10,000 objects


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Issue 7's target for a scenario: ``times`` x the network bound plus start-up, capped
    at ``at_most`` seconds (when both are given, the lower one holds)."""

    times: float | None = None
    at_most: float | None = None

    def seconds(self, *, network: float, startup: float) -> float:
        limits = []
        if self.times is not None:
            limits.append(self.times * network + startup)
        if self.at_most is not None:
            limits.append(self.at_most)
        return min(limits) if limits else math.inf

    @property
    def text(self) -> str:
        parts = []
        if self.times is not None:
            parts.append(f"{self.times:g}x bound + start-up")
        if self.at_most is not None:
            parts.append(f"under {self.at_most:g} s")
        return ", ".join(parts) or "none"


@dataclasses.dataclass(slots=True, kw_only=True)
class Run:
    wall: float
    cpu: float  # user + system seconds of the converge process
    server_cpu: float  # user + system seconds the emulator spent meanwhile
    requests: int
    rss_mb: float
    code: int
    # Times the process slept (a blocking call) and was preempted: on a VM each wake-up
    # costs tens of microseconds of CPU, which is why a threaded client costs more than
    # the lean single-threaded one per call.
    switches: int = 0


@dataclasses.dataclass(slots=True, kw_only=True)
class Row:
    scenario: str
    objects: int
    bound: Bound
    runs: list[Run]
    target: Target
    floors: list[float] = dataclasses.field(default_factory=list)  # lean client, wall s
    # `converge --version` timed beside each run: the start-up this row's bound, target and
    # floor count, as busy as the machine was for the row (it drifts over a run).
    startups: list[float] = dataclasses.field(default_factory=list)
    note: str = ""

    def summary(self, *, latency: float, startup: float) -> dict[str, Any]:
        if self.startups:
            startup = statistics.median(self.startups)
        wall = statistics.median(r.wall for r in self.runs)
        network = self.bound.seconds(latency)
        bound = network + startup
        target = self.target.seconds(network=network, startup=startup)
        peak = max(r.rss_mb for r in self.runs)
        floor = statistics.median(self.floors) + startup if self.floors else None
        return {
            "scenario": self.scenario,
            "objects": self.objects,
            "requests": int(statistics.median(r.requests for r in self.runs)),
            "requests_needed": self.bound.requests,
            "startup_s": round(startup, 3),
            "wall_s": round(wall, 3),
            "cpu_s": round(statistics.median(r.cpu for r in self.runs), 3),
            "server_cpu_s": round(statistics.median(r.server_cpu for r in self.runs), 3),
            "bound_s": round(bound, 3),
            "ratio": round(wall / bound, 2),
            "floor_s": None if floor is None else round(floor, 3),
            "floor_ratio": None if floor is None else round(wall / floor, 2),
            "target_s": None if math.isinf(target) else round(target, 3),
            "target": self.target.text,
            "met": wall <= target and peak <= MEMORY_TARGET_MB,
            "peak_rss_mb": round(peak, 1),
            "context_switches": int(statistics.median(r.switches for r in self.runs)),
            "exit_codes": sorted({r.code for r in self.runs}),
            "runs_s": [round(r.wall, 3) for r in self.runs],
            "note": self.note,
        }


# -- the emulator, in its own process -----------------------------------------------------


class Emulator:
    def __init__(self, converge: list[str], data: Path, *, latency: float) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (data / "emulator.log").open("wb")
        self.process = subprocess.Popen(
            [
                *converge,
                "emulator",
                "--port",
                str(self.port),
                "--latency",
                f"{latency * 1000:g}ms",
                "--page-cap",
                str(PAGE_CAP),
                "--data",
                str(data / "emulator"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.control("server", "stats")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the emulator did not start; see {self.log.name}") from None
                time.sleep(0.05)

    def control(self, target: str, action: str, payload: Any = None) -> Any:
        body = json.dumps(payload or {}).encode()
        request = urllib.request.Request(
            f"{self.url}/_control/{target}/{action}",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read() or b"null")

    def requests(self) -> int:
        return int(self.control("server", "stats")["server"]["requests"])

    def cpu_seconds(self) -> float:
        """User + system CPU the emulator process has used so far (Linux ``/proc``)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # After the command name: state is field 3, utime 14 and stime 15 (man 5 proc).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def apis(self) -> set[str]:
        return set(self.control("server", "stats")["apis"])

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- manifests and live objects -----------------------------------------------------------


def roleapp_name(n: int) -> str:
    return f"app-{n:05d}"


def create_id(n: int, connection: str = "era-main") -> str:
    # The planner's own deterministic id (manifests.RoleApp.create_id): seeded objects with
    # it are recognised as ours, so an unchanged estate plans to nothing without an apply.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"converge:{connection}/{roleapp_name(n)}"))


def fields(n: int) -> dict[str, Any]:
    return {
        "folder": f"folder-{n:05d}",
        "title": f"АРМ оператора {n}",
        "roles": ["chatagent", "supervisor"] if n % 2 else ["chatagent"],
        "svcscriptcode": f"script_{n % 17}",
        "opts": {"recv_timeout": 30 + n % 5, "visible": True},
    }


def live_roleapp(n: int, *, title: str | None = None) -> dict[str, Any]:
    entity = {"id": create_id(n), **fields(n)}
    entity["opts"] = {"title": "", "comment": "", **entity["opts"]}
    if title is not None:
        entity["title"] = title
    return entity


def roleapp_yaml(n: int) -> str:
    f = fields(n)
    roles = ", ".join(f["roles"])
    return (
        "apiVersion: converge/v1\n"
        "kind: RoleApp\n"
        f"metadata: {{name: {roleapp_name(n)}, labels: {{team: team-{n % 10}}}}}\n"
        "spec:\n"
        "  connection: era-main\n"
        f"  folder: {f['folder']}\n"
        f"  title: {f['title']}\n"
        f"  roles: [{roles}]\n"
        f"  svcscriptcode: {f['svcscriptcode']}\n"
        f"  opts: {{recv_timeout: {f['opts']['recv_timeout']}, visible: true}}\n"
    )


CONNECTIONS = """\
apiVersion: converge/v1
kind: Connection
metadata: {name: era-main}
spec:
  api: era
  url: ${ERA_URL}
  auth: {domain: sandbox.era, login: converge, password: "${ERA_PASSWORD}"}
---
apiVersion: converge/v1
kind: Connection
metadata: {name: element-main}
spec:
  api: element
  url: ${ELEMENT_URL}
  auth: {clientId: converge, clientSecret: "${ELEMENT_CLIENT_SECRET}"}
---
apiVersion: converge/v1
kind: Connection
metadata: {name: vcda-main}
spec:
  api: vcda
  url: ${VCDA_URL}
  auth: {type: localUser, user: admin, password: "${VCDA_PASSWORD}"}
---
apiVersion: converge/v1
kind: Connection
metadata: {name: commvault-main}
spec:
  api: commvault
  url: ${COMMVAULT_URL}
  auth: {username: admin, password: "${COMMVAULT_PASSWORD}"}
"""


def app_uuid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-app-{n}"))


def policy_split(count: int) -> tuple[int, int, int]:
    """(element, vcda, commvault) policies: one vcda (one appliance), the rest halved."""
    vcda = 1 if count else 0
    element = (count - vcda + 1) // 2
    return element, vcda, count - vcda - element


def policies_yaml(count: int) -> str:
    element, vcda, commvault = policy_split(count)
    docs = []
    for n in range(element):
        docs.append(
            f"""apiVersion: converge/v1
kind: BackupPolicy
metadata: {{name: element-{n:02d}}}
spec:
  connection: element-main
  maxAge: 26h
  source:
    elementApplication: {{applicationId: {app_uuid(n)}}}
"""
        )
    for n in range(vcda):
        docs.append(
            f"""apiVersion: converge/v1
kind: BackupPolicy
metadata: {{name: vcda-{n:02d}}}
spec:
  connection: vcda-main
  maxAge: 7d
  source:
    vcdaAppliance: {{password: "${{VCDA_BACKUP_PASSWORD}}"}}
"""
        )
    for n in range(commvault):
        docs.append(
            f"""apiVersion: converge/v1
kind: BackupPolicy
metadata: {{name: commvault-{n:02d}}}
spec:
  connection: commvault-main
  maxAge: 8h
  source:
    commvaultDynamoDB: {{clientName: aws-prod, instanceName: DynamoDB, subclientId: {1000 + n}}}
"""
        )
    return "---\n".join(docs)


def write_workspace(root: Path, roleapps: int, *, policies: int = 0) -> Path:
    """``root/manifests``: the connections and ``roleapps`` RoleApps in FILES files;
    ``root/backups``: the policies (so plan and validate can leave them out)."""
    if root.exists():
        shutil.rmtree(root)
    manifests = root / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "connections.yaml").write_text(CONNECTIONS, encoding="utf-8")
    files = min(FILES, max(1, roleapps))
    per_file = math.ceil(roleapps / files)
    for f in range(files):
        numbers = range(f * per_file, min(roleapps, (f + 1) * per_file))
        text = "---\n".join(roleapp_yaml(n) for n in numbers)
        (manifests / f"roleapps-{f:03d}.yaml").write_text(text, encoding="utf-8")
    if policies:
        (root / "backups").mkdir()
        (root / "backups" / "policies.yaml").write_text(policies_yaml(policies), encoding="utf-8")
    return root


def seed_roleapps(emulator: Emulator, objects: list[dict[str, Any]]) -> None:
    for start in range(0, len(objects), 5_000):
        emulator.control("era", "seed", {"roleapps": objects[start : start + 5_000]})


def seed_backups(emulator: Emulator, count: int) -> None:
    element, vcda, commvault = policy_split(count)
    for api in ("element", "vcda", "commvault"):
        emulator.control(api, "reset")
    for n in range(element):
        emulator.control("element", "seed_application", {"id": app_uuid(n)})
        emulator.control(
            "element", "seed_backup", {"application_id": app_uuid(n), "age_seconds": 3600}
        )
    for _ in range(vcda):
        emulator.control("vcda", "seed_backup", {"age_seconds": 3600})
    for n in range(commvault):
        emulator.control(
            "commvault",
            "seed_subclient",
            {"subclient_id": 1000 + n, "client_name": "aws-prod", "instance_name": "DynamoDB"},
        )
        emulator.control(
            "commvault", "seed_backup", {"subclient_id": 1000 + n, "age_seconds": 3600}
        )


# -- running converge ---------------------------------------------------------------------


def compile_bytecode() -> None:
    """Compile converge's modules once before measuring, as installing a package does.

    Why: PYTHONDONTWRITEBYTECODE (set here for the runs, and set on some CI machines) keeps
    an editable install from ever saving its ``.pyc``, so every measured run compiled each
    module it imported again: ~0.1 s that an installed converge never pays. The modules of
    the checkout being measured are compiled, whichever interpreter runs them.
    """
    package = Path(__file__).resolve().parents[1] / "controller"
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)],
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
    )


def converge_command() -> list[str]:
    script = Path(sys.executable).with_name("converge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "controller"]


def run_converge(
    converge: list[str], args: list[str], *, cwd: Path, env: dict[str, str], log: Path
) -> tuple[float, float, float, int, int]:
    """(wall s, CPU s, peak RSS MB, exit code, context switches) of one converge process."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [*converge, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    switches = usage.ru_nvcsw + usage.ru_nivcsw
    return wall, cpu, usage.ru_maxrss / 1024, process.returncode, switches  # maxrss: KiB


def calibrate() -> float:
    """Milliseconds a fixed pure-Python loop takes here now (the best of 5).

    Why: on a shared VM the same run varies by a third from one hour to the next, with
    nothing in converge changed. Measured at the start and the end of a run, this says how
    busy the machine was, so two tables can be compared (or not).
    """

    def once() -> float:
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        return time.perf_counter() - started

    return min(once() for _ in range(5)) * 1000


class Bench:
    def __init__(self, sizes: Sizes, *, work: Path, latency: float) -> None:
        self.sizes = sizes
        self.work = work
        self.latency = latency
        self.converge = converge_command()
        self.emulator = Emulator(self.converge, work, latency=latency)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ERA_", "VCDA_", "ELEMENT_", "COMMVAULT_", "CONVERGE_"))
        }
        self.env.update(SECRETS)
        self.env["NO_COLOR"] = "1"
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        for api, base in (
            ("ERA", "/era"),
            ("ELEMENT", "/element"),
            ("VCDA", "/vcda"),
            ("COMMVAULT", "/commvault/commandcenter/api"),
        ):
            self.env[f"{api}_URL"] = self.emulator.url + base
        self.startup = 0.0
        self.rows: list[Row] = []
        self.calibration: list[float] = []  # calibrate() at the start and at the end

    def close(self) -> None:
        self.emulator.close()

    def measure_startup(self) -> None:
        self.startup = statistics.median(
            self.version_wall() for _ in range(max(3, self.sizes.repeat))
        )

    def version_wall(self) -> float:
        log = self.work / "v.log"
        return run_converge(self.converge, ["--version"], cwd=self.work, env=self.env, log=log)[0]

    def scenario(
        self,
        name: str,
        objects: int,
        bound: Bound,
        args: list[str],
        *,
        workspace: Path,
        target: Target = Target(),
        prepare: Callable[[], None] = lambda: None,
        ok: tuple[int, ...] = (0,),
        floor: list[lean_client.Phase] | None = None,
        note: str = "",
    ) -> Row:
        row = Row(scenario=name, objects=objects, bound=bound, runs=[], target=target, note=note)
        for i in range(self.sizes.repeat):
            row.startups.append(self.version_wall())
            prepare()
            before = self.emulator.requests()
            log = workspace / f"run-{len(self.rows)}-{i}.log"
            server_before = self.emulator.cpu_seconds()
            wall, cpu, rss, code, switches = run_converge(
                self.converge, args, cwd=workspace, env=self.env, log=log
            )
            server_cpu = self.emulator.cpu_seconds() - server_before
            requests = self.emulator.requests() - before
            if code not in ok:
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise SystemExit(f"{name}: converge exited {code}:\n{tail}")
            row.runs.append(
                Run(
                    wall=wall,
                    cpu=cpu,
                    server_cpu=server_cpu,
                    requests=requests,
                    rss_mb=rss,
                    code=code,
                    switches=switches,
                )
            )
            if floor is not None:
                prepare()
                row.floors.append(lean_client.era_floor(self.env["ERA_URL"], ERA_LOGIN, floor))
        self.rows.append(row)
        print(f"  {name}: {statistics.median(r.wall for r in row.runs):.3f} s", file=sys.stderr)
        return row

    # -- the scenarios --------------------------------------------------------------------

    def run_all(self) -> None:
        self.calibration.append(calibrate())
        self.run_scenarios()
        self.calibration.append(calibrate())

    def run_scenarios(self) -> None:
        s = self.sizes
        self.measure_startup()
        emu = self.emulator
        state = ["--state", "sqlite:///.converge/state.db"]
        pages = math.ceil(s.roleapps / PAGE_CAP)
        # Listing: login and the first page in series (the stride is learnt from it), the
        # other pages and the empty one that ends the listing in parallel; logout at the end.
        listing = Bound(serial=3, parallel=((pages, ERA_CONCURRENCY),))
        read_floor = lean_client.era_phases(
            pages=pages, page_concurrency=ERA_CONCURRENCY, writes=(), write_concurrency=1
        )

        estate = write_workspace(self.work / "estate", s.roleapps, policies=s.policies)
        emu.control("era", "reset")
        seed_roleapps(emu, [live_roleapp(n) for n in range(s.roleapps)])
        self.scenario(
            f"plan {s.roleapps:,} unchanged",
            s.roleapps,
            listing,
            ["plan", "manifests", *state],
            workspace=estate,
            target=Target(times=1.5, at_most=2.0),
            floor=read_floor,
        )
        drifted = s.roleapps // 10
        seed_roleapps(emu, [live_roleapp(n, title=f"edited {n}") for n in range(0, s.roleapps, 10)])
        self.scenario(
            f"plan {s.roleapps:,}, {drifted:,} drifted",
            s.roleapps,
            listing,
            ["plan", "manifests", *state],
            workspace=estate,
            floor=read_floor,
        )

        seed_backups(emu, s.policies)
        seed_roleapps(emu, [live_roleapp(n) for n in range(0, s.roleapps, 10)])
        element, vcda, commvault = policy_split(s.policies)
        # Each backup connection: login, one listing per policy (8 at a time), logout; all
        # connections at once, beside the era listing: the longest of them is the bound.
        backup_rounds = max(
            2 + math.ceil(n / ERA_CONCURRENCY) for n in (element, vcda, commvault) if n
        )
        era_rounds = 3 + math.ceil(pages / ERA_CONCURRENCY)
        drift_bound = Bound(
            serial=max(backup_rounds, era_rounds),
            needed=(3 + pages) + sum(2 + n for n in (element, vcda, commvault) if n),
        )
        self.scenario(
            f"drift {s.roleapps:,} + {s.policies} policies",
            s.roleapps + s.policies,
            drift_bound,
            ["drift", "manifests", "backups", *state],
            workspace=estate,
            ok=(0, 2),
        )

        creates = write_workspace(self.work / "creates", s.writes)
        apply = ["apply", "manifests", "--auto-approve", "--parallelism", str(APPLY_PARALLELISM)]
        apply += state

        def fresh_create() -> None:
            emu.control("era", "reset")
            shutil.rmtree(creates / ".converge", ignore_errors=True)

        self.scenario(
            f"apply {s.writes:,} creates",
            s.writes,
            Bound(serial=3, parallel=((s.writes, APPLY_PARALLELISM),)),
            apply,
            workspace=creates,
            target=Target(times=2),
            prepare=fresh_create,
            floor=lean_client.era_phases(
                pages=0,
                page_concurrency=ERA_CONCURRENCY,
                writes=[
                    lean_client.create({"id": create_id(n), **fields(n)}) for n in range(s.writes)
                ],
                write_concurrency=APPLY_PARALLELISM,
            ),
        )

        def drift_writes() -> None:
            emu.control("era", "reset")
            seed_roleapps(emu, [live_roleapp(n, title=f"edited {n}") for n in range(s.writes)])

        write_pages = math.ceil(s.writes / PAGE_CAP)
        self.scenario(
            f"apply {s.writes:,} updates",
            s.writes,
            Bound(
                serial=3, parallel=((write_pages, APPLY_PARALLELISM), (s.writes, APPLY_PARALLELISM))
            ),
            apply,
            workspace=creates,
            target=Target(times=2),
            prepare=drift_writes,
            floor=lean_client.era_phases(
                pages=write_pages,
                page_concurrency=ERA_CONCURRENCY,
                writes=[
                    lean_client.update(create_id(n), {"title": fields(n)["title"]})
                    for n in range(s.writes)
                ],
                write_concurrency=APPLY_PARALLELISM,
            ),
        )

        self.scenario(
            f"validate {s.roleapps:,}",
            s.roleapps,
            Bound(),
            ["validate", "manifests"],
            workspace=estate,
            target=Target(at_most=3.0),
        )

    def report(self) -> dict[str, Any]:
        return {
            "format": "converge.bench/v1",
            "machine": machine(),
            "latency_s": self.latency,
            "page_cap": PAGE_CAP,
            "startup_s": round(self.startup, 3),
            "calibration_ms": [round(ms, 1) for ms in self.calibration],
            "repeat": self.sizes.repeat,
            "scenarios": [
                row.summary(latency=self.latency, startup=self.startup) for row in self.rows
            ],
        }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def table(report: dict[str, Any]) -> str:
    headers = (
        "scenario",
        "objects",
        "requests",
        "wall s",
        "cpu s",
        "server cpu s",
        "bound s",
        "ratio",
        "floor s",
        "x floor",
        "target s",
        "met",
        "peak MB",
    )
    rows = [
        (
            s["scenario"] + (" *" if s["note"] else ""),
            f"{s['objects']:,}",
            f"{s['requests']:,}",
            f"{s['wall_s']:.2f}",
            f"{s['cpu_s']:.2f}",
            f"{s['server_cpu_s']:.2f}",
            f"{s['bound_s']:.2f}",
            f"{s['ratio']:.2f}",
            "-" if s["floor_s"] is None else f"{s['floor_s']:.2f}",
            "-" if s["floor_ratio"] is None else f"{s['floor_ratio']:.2f}",
            "-" if s["target_s"] is None else f"{s['target_s']:.2f}",
            "yes" if s["met"] else "no",
            f"{s['peak_rss_mb']:.0f}",
        )
        for s in report["scenarios"]
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: tuple[str, ...]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    m = report["machine"]
    out.append("")
    out.append(
        f"Medians of {report['repeat']}; latency {report['latency_s'] * 1000:g} ms, page cap "
        f"{report['page_cap']}; bound = round trips x latency / concurrency + start-up "
        f"({report['startup_s']:.2f} s, `converge --version`); target: issue 7's, and peak "
        f"memory under {MEMORY_TARGET_MB} MB; server cpu: the emulator's own, on the same "
        "machine; floor = the same Era calls from a minimal client (benchmarks/lean_client.py) "
        "+ start-up: what this machine and server allow any client."
    )
    busy = " and ".join(f"{ms:.0f}" for ms in report["calibration_ms"])
    out.append(
        f"{m['nproc']} x {m['cpu']}, Python {m['python']}; a fixed 2,000,000-step Python loop "
        f"took {busy} ms at the start and the end (the busier the machine, the longer)."
    )
    out += [f"* {s['note']}" for s in report["scenarios"] if s["note"]]
    return "\n".join(out)


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="converge-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--repeat", type=int, help="runs per scenario (default 5; quick 1)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeat:
        sizes = dataclasses.replace(sizes, repeat=args.repeat)
    compile_bytecode()
    with workdir(args.keep) as work:
        bench = Bench(sizes, work=work, latency=LATENCY)
        try:
            bench.run_all()
        finally:
            bench.close()
        report = bench.report()
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
