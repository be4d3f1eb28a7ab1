"""The emulator's one HTTP server: mounts the emulated APIs under path prefixes on one port.

Called by ``sandbox.start_sandbox`` and ``controller.emulator.serve`` (``converge emulator``)
and by tests. It owns the HTTP side only — framing, keep-alive, routing, the control plane
and the server-wide faults; each API (``core.EmulatedApi``) owns its state and its answers.

- ``/<mount>/...`` goes to the API whose ``mount`` is the first path segment; commvault
  lives at ``/commvault/commandcenter/api`` (its real base path below the mount).
- ``POST /_control/<mount>/<action>`` → ``api.control(action, json_body)``;
  ``POST /_control/server/<action>`` → ``fault``, ``stats``, ``reset_faults``.
  Faults never apply to the control plane, so tests can always steer the server.
- Any method is dispatched, including Era's custom ``LOOKUP``.
- A dropped connection is a closed socket with nothing written: the "lost answer" case.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any

from controller.emulator import core
from controller.emulator.handler import HttpServer, RequestHandler

__all__ = ["EmulatorServer", "ServerFaults"]

log = logging.getLogger(__name__)

# Where an API lives below the server root when it is not simply "/<mount>".
_BASE_PATHS = {"commvault": "/commvault/commandcenter/api"}


def base_path(api: core.EmulatedApi) -> str:
    """The path prefix an API is served under (``/era``, ``/commvault/commandcenter/api``)."""
    return str(getattr(api, "base_path", None) or _BASE_PATHS.get(api.mount, f"/{api.mount}"))


class ServerFaults:
    """Server-wide faults, drawn per API call from one seeded random source (thread-safe).

    The constructor's ``latency``/``error_rate`` are the baseline; the ``fault`` control
    action changes any subset, ``reset_faults`` goes back to the baseline.
    """

    def __init__(self, *, latency: float, error_rate: float, seed: int | None) -> None:
        self._lock = threading.Lock()
        self._baseline = {"latency": latency, "error_rate": error_rate}
        self._seed = seed
        self._random = random.Random(seed)
        self.counts = {"requests": 0, "error_503": 0, "rate_429": 0, "dropped": 0}
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.latency = float(self._baseline["latency"])
            self.jitter = 0.0
            self.error_rate = float(self._baseline["error_rate"])
            self.rate_429 = 0.0
            self.retry_after = 1.0
            self.drop_rate = 0.0

    def configure(self, payload: dict[str, Any]) -> dict[str, Any]:
        known = {"error_rate", "rate_429", "retry_after", "drop_rate", "latency", "jitter", "seed"}
        unknown = set(payload) - known
        if unknown:
            raise core.BadRequest(f"unknown fault settings: {', '.join(sorted(unknown))}")
        try:
            values = {key: float(value) for key, value in payload.items() if key != "seed"}
        except (TypeError, ValueError) as exc:
            raise core.BadRequest(f"fault settings must be numbers: {exc}") from None
        for key in ("error_rate", "rate_429", "drop_rate"):
            if not 0.0 <= values.get(key, 0.0) <= 1.0:
                raise core.BadRequest(f"{key} must be between 0 and 1")
        with self._lock:
            for key, value in values.items():
                setattr(self, key, value)
            if "seed" in payload:
                self._random = random.Random(payload["seed"])
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "jitter": self.jitter,
            "error_rate": self.error_rate,
            "rate_429": self.rate_429,
            "retry_after": self.retry_after,
            "drop_rate": self.drop_rate,
        }

    def draw(self) -> tuple[float, str | None]:
        """``(delay seconds, None | "error_503" | "rate_429" | "dropped")`` for one call."""
        with self._lock:
            self.counts["requests"] += 1
            delay = self.latency + (self._random.uniform(0, self.jitter) if self.jitter else 0.0)
            roll = self._random.random()
            outcome = None
            # One roll, three adjacent bands: the rates are shares of all calls, not nested.
            for name, rate in (
                ("dropped", self.drop_rate),
                ("rate_429", self.rate_429),
                ("error_503", self.error_rate),
            ):
                if roll < rate:
                    outcome = name
                    break
                roll -= rate
            if outcome is not None:
                self.counts[outcome] += 1
            return delay, outcome

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "settings": self.settings()}


class _HttpServer(HttpServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once must not be refused
    allow_reuse_address = True
    emulator: EmulatorServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        # Open keep-alive connections, so ``stop()`` can end them instead of leaving their
        # threads to serve APIs whose storage is already closed.
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client going away mid-answer is normal under fault tests; say nothing.
        log.debug("connection error from %s", client_address, exc_info=True)


class EmulatorServer:
    """The emulated APIs on one port; ``start()`` serves from a daemon thread."""

    def __init__(
        self,
        apis: Iterable[core.EmulatedApi],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.apis = {api.mount: api for api in apis}
        # Longest prefix first, so a mount never shadows a deeper one.
        self._prefixes = sorted(
            ((base_path(api).lower().rstrip("/"), api) for api in self.apis.values()),
            key=lambda item: -len(item[0]),
        )
        self.faults = ServerFaults(latency=latency, error_rate=error_rate, seed=seed)
        self._httpd = _HttpServer((host, port), RequestHandler)
        self._httpd.emulator = self
        self._thread: threading.Thread | None = None
        self._served = False  # shutdown() would wait forever on a server never served
        self._stopped = False

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def url_for(self, api: str | core.EmulatedApi) -> str:
        """The base URL a Connection uses for an API (by mount name or the API itself)."""
        target = self.apis[api] if isinstance(api, str) else api
        return self.url + base_path(target)

    def start(self) -> EmulatorServer:
        """Serve from a daemon thread; returns self."""
        if self._thread is None:
            self._served = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"emulator:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` (or KeyboardInterrupt)."""
        self._served = True
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving, then close each API that has a ``close()`` (its storage); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._served:
            self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for api in self.apis.values():
            close = getattr(api, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- used by the request handler ----------------------------------------------------

    def route(self, path: str) -> tuple[core.EmulatedApi, str] | None:
        lowered = path.lower()
        for prefix, api in self._prefixes:
            if lowered == prefix or lowered.startswith(prefix + "/"):
                return api, path[len(prefix) :] or "/"
        return None

    def call(self, api: core.EmulatedApi, request: core.EmuRequest) -> core.EmuResponse | None:
        """One API call with the server-wide faults; None means drop the connection."""
        error_response = getattr(api, "error_response", None) or core.generic_error
        delay, outcome = self.faults.draw()
        if delay > 0:
            time.sleep(delay)
        if outcome == "dropped":
            return None
        if outcome == "error_503":
            return error_response(503, "service unavailable (injected)")
        if outcome == "rate_429":
            response = error_response(429, "too many requests (injected)")
            response.headers["Retry-After"] = _seconds(self.faults.retry_after)
            return response
        try:
            return api.handle(request)
        except core.DropConnection:
            return None
        except core.EmuError as exc:
            return exc.response(error_response)
        except Exception:
            log.exception(
                "emulated %s API failed on %s %s", api.mount, request.method, request.path
            )
            return error_response(500, "internal emulator error")

    def control_request(self, path: str, body: bytes) -> core.EmuResponse:
        """``/_control/<mount|server>/<action>`` with a JSON object body (empty means {})."""
        parts = [part for part in path.split("/") if part][1:]
        if len(parts) != 2:
            return core.generic_error(404, "use /_control/<mount>/<action>")
        target, action = parts
        try:
            payload = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (UnicodeDecodeError, ValueError) as exc:
            return core.generic_error(400, f"invalid JSON body: {exc}")
        if not isinstance(payload, dict):
            return core.generic_error(400, "the control body must be a JSON object")
        try:
            if target == "server":
                result = self.control(action, payload)
            elif target in self.apis:
                result = self.apis[target].control(action, payload)
            else:
                return core.generic_error(404, f"no API is mounted as {target!r}")
        except core.EmuError as exc:
            return core.generic_error(exc.status, exc.message)
        return core.json_response(200, {} if result is None else result)

    def control(self, action: str, payload: dict[str, Any]) -> Any:
        """Server-wide control actions: ``fault``, ``stats``, ``reset_faults``."""
        if action == "fault":
            return self.faults.configure(payload)
        if action == "reset_faults":
            self.faults.reset()
            return self.faults.settings()
        if action == "stats":
            return {
                "server": self.faults.stats(),
                "apis": {mount: api.control("stats", {}) for mount, api in self.apis.items()},
            }
        raise core.EmuError(404, f"unknown server control action {action!r}")


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
