"""The emulator: the four live APIs (era, element, vcda, commvault) served over local HTTP.

``core.py`` is the contract between the server and the APIs; ``storage.py`` persists each
API's state; ``server.py`` is the HTTP server; ``era.py``, ``element.py``, ``vcda.py`` and
``commvault.py`` are the APIs; ``sandbox.py`` runs them in-process for ``url: sandbox``.

This module wires them: :func:`build_apis` makes the four APIs (each with its own SQLite
file under a data directory, or in memory), and :func:`serve` is what ``converge emulator``
calls. The API modules are imported inside the functions, not here, because each of them
imports ``controller.emulator.core`` and so runs this file first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.emulator.core import EmulatedApi
    from controller.emulator.server import EmulatorServer

__all__ = ["build_apis", "serve"]


def build_apis(
    data_dir: Path | None,
    *,
    page_cap: int = 1000,
    clock: Callable[[], float] = time.time,
) -> list[EmulatedApi]:
    """The four emulated APIs; persisted as ``<data_dir>/<mount>.db``, in memory when None."""
    from controller.emulator import commvault, element, era, vcda
    from controller.emulator.storage import Storage

    def storage(name: str) -> Storage:
        return Storage(None if data_dir is None else Path(data_dir) / f"{name}.db")

    return [
        era.EraApi(storage("era"), clock=clock, page_cap=page_cap),
        element.ElementApi(storage("element"), clock=clock),
        vcda.VcdaApi(storage("vcda"), clock=clock),
        commvault.CommvaultApi(storage("commvault"), clock=clock),
    ]


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    latency: float = 0.0,
    error_rate: float = 0.0,
    data_dir: Path | None = None,
    page_cap: int = 1000,
    echo: Callable[[str], None] = print,
    block: bool = True,
) -> EmulatorServer:
    """Start the emulator and print each API's base URL and the credentials it accepts.

    With ``block`` (the CLI) it serves until interrupted, then stops and returns; without,
    it serves from a background thread and returns the running server (tests).
    """
    from controller.emulator.server import EmulatorServer

    apis = build_apis(data_dir, page_cap=page_cap)
    server = EmulatorServer(apis, host=host, port=port, latency=latency, error_rate=error_rate)
    where = f"persisted under {data_dir}" if data_dir is not None else "in memory"
    echo(f"converge emulator on {server.url} ({where}); control plane at {server.url}/_control")
    for api in apis:
        auth = ", ".join(f"{key}={value}" for key, value in api.credentials().items())
        echo(f"  {api.mount:<10} {server.url_for(api)}  credentials: {auth}")
    if not block:
        return server.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        echo("converge emulator: stopped")
    finally:
        server.stop()
    return server
