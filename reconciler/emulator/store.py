"""The emulator's segments in SQLite: in memory by default, a file to survive restarts."""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    cohort_id TEXT PRIMARY KEY,
    cohort_name TEXT NOT NULL,
    description TEXT,
    partner TEXT,
    unmatched INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    cohort_id TEXT NOT NULL,
    uid TEXT NOT NULL,
    PRIMARY KEY (cohort_id, uid)
) WITHOUT ROWID;
"""


class SegmentStore:
    """Thread-safe: the HTTP server handles requests on several threads."""

    def __init__(self, path: str = ":memory:") -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def apply(
        self, action: str, partner: str, cohort_id: str, name: str, description: str | None,
        matched: Iterable[str], unmatched: int,
    ) -> None:
        """Create the segment on first sight, then add or remove the matched members."""
        now = time.time()
        rows = [(cohort_id, uid) for uid in matched]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO segments (cohort_id, cohort_name, description, partner, unmatched, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(cohort_id) DO UPDATE SET cohort_name = excluded.cohort_name,"
                " description = COALESCE(excluded.description, description), unmatched = unmatched + excluded.unmatched,"
                " updated_at = excluded.updated_at",
                (cohort_id, name, description, partner, unmatched if action == "add_members" else 0, now, now),
            )
            if action == "add_members":
                self._db.executemany("INSERT OR IGNORE INTO members (cohort_id, uid) VALUES (?, ?)", rows)
            else:
                self._db.executemany("DELETE FROM members WHERE cohort_id = ? AND uid = ?", rows)
            self._db.execute("COMMIT")

    def segments(self) -> list[dict]:
        with self._lock:
            cur = self._db.execute(
                "SELECT s.cohort_id, s.cohort_name, s.description, s.partner, s.unmatched, s.created_at,"
                " s.updated_at, (SELECT COUNT(*) FROM members m WHERE m.cohort_id = s.cohort_id)"
                " FROM segments s ORDER BY s.cohort_id"
            )
            rows = cur.fetchall()
        keys = ("cohort_id", "cohort_name", "description", "partner", "unmatched", "created_at", "updated_at", "size")
        return [dict(zip(keys, r)) for r in rows]

    def segment(self, cohort_id: str) -> dict | None:
        found = [s for s in self.segments() if s["cohort_id"] == cohort_id]
        if not found:
            return None
        with self._lock:
            uids = [r[0] for r in self._db.execute(
                "SELECT uid FROM members WHERE cohort_id = ? ORDER BY uid", (cohort_id,))]
        return {**found[0], "members": uids}

    def reset(self) -> None:
        with self._lock:
            self._db.executescript("DELETE FROM members; DELETE FROM segments;")

    def close(self) -> None:
        with self._lock:
            self._db.close()
