"""The in-process sandbox: the emulator behind ``url: sandbox`` Connections.

The CLI calls :func:`start_sandbox` once per run when a manifest names ``url: sandbox``,
then resolves each such Connection to ``server.url_for(api)`` with ``api.credentials()``
as its auth. State persists under ``data_dir`` (``.converge/sandbox/``), so a second run
sees what the first one applied — the point of a sandbox one can ``plan`` against.
"""

from __future__ import annotations

import time
from pathlib import Path

from controller import emulator
from controller.emulator import server

__all__ = ["start_sandbox"]


def start_sandbox(data_dir: Path, *, page_cap: int = 1000) -> server.EmulatorServer:
    """Build the four APIs persisted under ``data_dir`` and serve them on 127.0.0.1:<free>."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    apis = emulator.build_apis(Path(data_dir), page_cap=page_cap, clock=time.time)
    return server.EmulatorServer(apis, host="127.0.0.1", port=0).start()
