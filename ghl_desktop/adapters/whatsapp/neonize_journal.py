"""Write-ahead journal for incoming WhatsApp events (durability at the engine edge).

Why: whatsmeow acknowledges a message to WhatsApp's server before neonize hands it to Python (see
the module docstring of ``neonize_transport``). Writing the raw event bytes here, fsynced, on the
Go callback thread — before the event is scheduled on the event loop — means a crash anywhere
after this point is recovered on the next start: rows are deleted only after the app's handler
(the durable database write) returned, and leftover rows are replayed. Delivery becomes
at-least-once; the handler deduplicates by WhatsApp message id.

SQLite with ``synchronous=FULL`` (one fsync per append) in its own file, mode 0600 (message
content is personal data). Thread-safe: appends come from Go threads, deletes from the loop.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path


class EventJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, (re)opened on first use (a stopped transport may be started again)."""
        if self._conn is None:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "code INTEGER NOT NULL, payload BLOB NOT NULL)"
            )
            self._conn = conn
        return self._conn

    def append(self, code: int, payload: bytes) -> int:
        with self._lock:
            cursor = self._db.execute("INSERT INTO pending (code, payload) VALUES (?, ?)", (code, payload))
            return int(cursor.lastrowid or 0)

    def done(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE id = ?", (row_id,))

    def pending(self) -> list[tuple[int, int, bytes]]:
        """Rows whose handler never finished, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, code, payload FROM pending ORDER BY id").fetchall()
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
