"""Files written whole: a reader (node-exporter, a technician copying recordings) never sees half of one;
and whether stderr is systemd's journal."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_whole(path: Path, data: bytes, mode: int) -> None:
    """`data` at `path` with permissions `mode` whatever the umask, there only once whole: a hidden part
    file of a new, unpredictable name (mkstemp: O_EXCL, so a link planted in a directory others may
    write is not followed), set to `mode` and renamed into place; on failure the part file is removed."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    part = Path(name)
    try:
        with open(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def new_file_mode() -> int:
    """What open() gives a new file here: 0o666 less the umask (read by setting and restoring it)."""
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


def stderr_is_journal() -> bool:
    """True when file descriptor 2 is the journal stream systemd named in JOURNAL_STREAM (its device:inode).
    The variable alone is not enough: a shell started from a service's session inherits it while its
    stderr is a terminal."""
    try:
        device, inode = (int(part) for part in os.environ.get("JOURNAL_STREAM", "").split(":"))
        stat = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)
