"""Roleapp archives: the bytes to upload and their MD5.

Called by orchestrating (MD5s for planning) and applying (bytes to upload). A ``.zip`` file
is taken as is; a directory is zipped reproducibly — entries sorted, timestamps fixed,
permissions normalised — so the same tree always gives the same bytes and the same MD5,
and an unchanged archive is never uploaded again.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from controller.errors import ConvergeError

# 1980-01-01, the earliest time a zip entry can carry: any fixed value works.
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class ArchiveError(ConvergeError):
    """An archive named by a manifest cannot be read."""


def archive_bytes(path: str | Path) -> bytes:
    source = Path(path)
    try:
        if source.is_dir():
            return _zip_directory(source)
        return source.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"cannot read archive {source}: {exc.strerror or exc}") from exc


def md5_hex(data: bytes) -> str:
    # MD5 because Era reports attachments as md5;<HEX>: an identity check, not security.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _zip_directory(root: Path) -> bytes:
    import zipfile  # here: only a directory archive needs it, and it costs ~5 ms to load

    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            info = zipfile.ZipInfo(file.relative_to(root).as_posix(), date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            executable = os.access(file, os.X_OK)
            info.external_attr = (0o755 if executable else 0o644) << 16
            info.create_system = 3  # unix, whatever system zipped it
            archive.writestr(info, file.read_bytes())
    return buffer.getvalue()
