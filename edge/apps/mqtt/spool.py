"""The spool: every final is stored here first and deleted only once the broker acknowledged it.

sqlite3 (standard library, nothing to install on a box) gives an ordered store in one
file that a crash cannot corrupt: ids from AUTOINCREMENT never go back, so
replaying in id order is the daemon's order, across bridge restarts too. The size
bound counts payload bytes (exact and cheap); the file itself is somewhat larger.

A file that stops taking writes (a full disk, an SD card's I/O error) moves the spool
into memory, with what it still holds: the bridge goes on publishing, and only a
restart before the broker acknowledged them loses those finals. The bridge used to
die at the error and again at every restart's first final.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from edge.errors import StartupError, one_line

log = logging.getLogger(__name__)

FILE_NAME = "spool.sqlite3"
T = TypeVar("T")

_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS finals (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS last_final (one INTEGER PRIMARY KEY CHECK (one = 1), run_id TEXT NOT NULL,
                                       utterance_id INTEGER NOT NULL);
"""

Mark = tuple[str, int]  # (the daemon's run_id, utterance_id) of a final


class Spool:
    """Finals waiting for a PUBACK, oldest first, at most `max_bytes` of payload (then the oldest go)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._where = directory / FILE_NAME
        self.on_disk = True
        try:
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            self._db = sqlite3.connect(directory / FILE_NAME, check_same_thread=False)
            self._db.executescript(_SCHEMA)
            # WAL + NORMAL: a commit survives a crash or kill of the bridge, and costs no fsync, so a
            # slow disk (an SD card, another process flushing) never holds up reading the daemon; a
            # power cut can lose the last seconds of finals that the broker had not acknowledged yet.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._count, self._bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM finals").fetchone()
            self.dropped = self._counter("dropped")
            self.missed = self._counter("missed")
            row = self._db.execute("SELECT run_id, utterance_id FROM last_final").fetchone()
            self.last_final: Mark | None = tuple(row) if row else None
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"mqtt.spool_dir {directory}: cannot open the spool: {one_line(exc)}") from None

    def add(self, payload: bytes, mark: Mark | None = None) -> int:
        """Store one final, and `mark` as the last final taken in the same commit (a restarted bridge
        asks the daemon for the finals after it); returns how many of the oldest were dropped to stay
        under the bound."""
        return self._write(lambda: self._add(payload, mark))

    def _add(self, payload: bytes, mark: Mark | None) -> int:
        """The counts change only once the commit is made: a failed one is run again in memory."""
        count, size = self._count + 1, self._bytes + len(payload)
        dropped = 0
        with self._db:
            self._db.execute("INSERT INTO finals (payload) VALUES (?)", (payload,))
            if mark is not None:
                self._db.execute("INSERT OR REPLACE INTO last_final VALUES (1, ?, ?)", mark)
            while size > self._max_bytes and count:
                (oldest,) = self._db.execute(
                    "DELETE FROM finals WHERE id = (SELECT MIN(id) FROM finals) RETURNING LENGTH(payload)").fetchone()
                count, size, dropped = count - 1, size - oldest, dropped + 1
            if dropped:
                self._db.execute("INSERT OR REPLACE INTO counters VALUES ('dropped', ?)", (self.dropped + dropped,))
        self._count, self._bytes = count, size
        self.dropped += dropped
        if mark is not None:
            self.last_final = mark
        return dropped

    def count_missed(self, finals: int) -> None:
        """Finals the daemon published while the bridge was away and no longer holds."""
        def count() -> None:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO counters VALUES ('missed', ?)", (self.missed + finals,))
            self.missed += finals

        self._write(count)

    def after(self, last_id: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` finals with an id above `last_id`, in order."""
        return self._write(lambda: self._db.execute(
            "SELECT id, payload FROM finals WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)).fetchall())

    def remove(self, ids: Iterable[int]) -> None:
        """Forget acknowledged finals (ids already dropped are ignored)."""
        def delete() -> None:
            with self._db:
                sizes = [row[0] for row_id in ids for row in self._db.execute(
                    "DELETE FROM finals WHERE id = ? RETURNING LENGTH(payload)", (row_id,))]
            for size in sizes:
                self._forget(size)

        self._write(delete)

    def stats(self) -> dict[str, int | bool]:
        return {"spooled": self._count, "spool_bytes": self._bytes, "spool_dropped": self.dropped,
                "daemon_missed": self.missed, "spool_on_disk": self.on_disk}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, work: Callable[[], T]) -> T:
        """`work` under the lock; a file that fails it moves the spool into memory, where it runs again."""
        with self._lock:
            try:
                return work()
            except sqlite3.Error as exc:
                if not self.on_disk:
                    raise
                self._to_memory(exc)
                return work()

    def _to_memory(self, exc: sqlite3.Error) -> None:
        """Copy what the file holds into memory (what cannot be read is counted as dropped) and go on there."""
        memory = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            self._db.backup(memory)
        except sqlite3.Error:
            memory.executescript(_SCHEMA)
        (count,) = memory.execute("SELECT COUNT(*) FROM finals").fetchone()
        lost = self._count - count
        self._db.close()
        self._db, self.on_disk = memory, False
        self._count, self._bytes = memory.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM finals").fetchone()
        self.dropped += max(lost, 0)
        log.error("the spool %s failed (%s): finals are kept in memory from now on (the same mqtt.spool_max_mb), "
                  "and those the broker has not acknowledged are lost if the bridge restarts%s; free the disk, then "
                  "systemctl restart edge-asr-mqtt", self._where, one_line(exc),
                  f"; {lost} spooled final(s) could not be read and are counted as dropped" if lost > 0 else "")

    def _forget(self, size: int) -> None:
        self._count -= 1
        self._bytes -= size

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0
