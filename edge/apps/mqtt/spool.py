"""The spool: every final is stored here first and deleted only once the broker acknowledged it.

sqlite3 (standard library, nothing to install on a box) gives an ordered store in one
file that a crash cannot corrupt: ids from AUTOINCREMENT never go back, so
replaying in id order is the daemon's order, across bridge restarts too. The size
bound counts payload bytes (exact and cheap); the file itself is somewhat larger.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from edge.errors import StartupError, one_line

FILE_NAME = "spool.sqlite3"

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
        with self._lock, self._db:
            self._db.execute("INSERT INTO finals (payload) VALUES (?)", (payload,))
            if mark is not None:
                self._db.execute("INSERT OR REPLACE INTO last_final VALUES (1, ?, ?)", mark)
                self.last_final = mark
            self._count += 1
            self._bytes += len(payload)
            dropped = 0
            while self._bytes > self._max_bytes and self._count:
                (size,) = self._db.execute(
                    "DELETE FROM finals WHERE id = (SELECT MIN(id) FROM finals) RETURNING LENGTH(payload)").fetchone()
                self._forget(size)
                dropped += 1
            if dropped:
                self.dropped += dropped
                self._db.execute("INSERT OR REPLACE INTO counters VALUES ('dropped', ?)", (self.dropped,))
            return dropped

    def count_missed(self, finals: int) -> None:
        """Finals the daemon published while the bridge was away and no longer holds."""
        with self._lock, self._db:
            self.missed += finals
            self._db.execute("INSERT OR REPLACE INTO counters VALUES ('missed', ?)", (self.missed,))

    def after(self, last_id: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` finals with an id above `last_id`, in order."""
        with self._lock:
            return self._db.execute(
                "SELECT id, payload FROM finals WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)).fetchall()

    def remove(self, ids: Iterable[int]) -> None:
        """Forget acknowledged finals (ids already dropped are ignored)."""
        with self._lock, self._db:
            for row_id in ids:
                row = self._db.execute("DELETE FROM finals WHERE id = ? RETURNING LENGTH(payload)", (row_id,)).fetchone()
                if row:
                    self._forget(row[0])

    def stats(self) -> dict[str, int]:
        return {"spooled": self._count, "spool_bytes": self._bytes, "spool_dropped": self.dropped,
                "daemon_missed": self.missed}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _forget(self, size: int) -> None:
        self._count -= 1
        self._bytes -= size

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0
