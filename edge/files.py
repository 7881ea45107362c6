"""Files written whole: a reader (node-exporter, a technician copying recordings) never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_whole(path: Path, data: bytes, mode: int) -> None:
    """`data` at `path` with permissions `mode` whatever the umask, there only once whole: a hidden part
    file, made with `mode` from the start, renamed into place; on failure the part file is removed."""
    part = path.with_name(f".{path.name}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with open(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
