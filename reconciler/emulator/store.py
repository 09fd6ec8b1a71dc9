"""The emulator's segments in SQLite, per workspace: in memory by default, a file to survive restarts.

MoEngage keeps each workspace's segments apart, so the same cohort_id in two workspaces is two
segments here too.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable

from reconciler.common.actions import Action

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    workspace TEXT NOT NULL DEFAULT '',
    cohort_id TEXT NOT NULL,
    cohort_name TEXT NOT NULL,
    description TEXT,
    partner TEXT,
    unmatched INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (workspace, cohort_id)
);
CREATE TABLE IF NOT EXISTS members (
    workspace TEXT NOT NULL DEFAULT '',
    cohort_id TEXT NOT NULL,
    uid TEXT NOT NULL,
    PRIMARY KEY (workspace, cohort_id, uid)
) WITHOUT ROWID;
"""
_KEYS = ("workspace", "cohort_id", "cohort_name", "description", "partner", "unmatched", "created_at", "updated_at",
         "size")


class SegmentStore:
    """Thread-safe: the HTTP server handles requests on several threads."""

    def __init__(self, path: str = ":memory:", legacy_workspace: str = "") -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._upgrade(legacy_workspace)
        self._db.executescript(_SCHEMA)

    def _upgrade(self, workspace: str) -> None:
        """A file written before segments were kept per workspace: its segments go to `workspace`."""
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(segments)")]
        if not columns or "workspace" in columns:
            return
        self._db.executescript("BEGIN; ALTER TABLE segments RENAME TO old_segments; "
                               "ALTER TABLE members RENAME TO old_members;" + _SCHEMA)
        self._db.execute("INSERT INTO segments SELECT ?, * FROM old_segments", (workspace,))
        self._db.execute("INSERT INTO members SELECT ?, * FROM old_members", (workspace,))
        self._db.executescript("DROP TABLE old_segments; DROP TABLE old_members; COMMIT;")

    def apply(
        self, action: str, partner: str, cohort_id: str, name: str, description: str | None,
        matched: Iterable[str], unmatched: int, workspace: str = "",
    ) -> None:
        """Create the segment on first sight, then add or remove the matched members."""
        now = time.time()
        rows = [(workspace, cohort_id, uid) for uid in matched]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO segments (workspace, cohort_id, cohort_name, description, partner, unmatched, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(workspace, cohort_id) DO UPDATE SET"
                " cohort_name = excluded.cohort_name, description = COALESCE(excluded.description, description),"
                " unmatched = unmatched + excluded.unmatched, updated_at = excluded.updated_at",
                (workspace, cohort_id, name, description, partner, unmatched if action == Action.ADD else 0, now,
                 now),
            )
            if action == Action.ADD:
                self._db.executemany("INSERT OR IGNORE INTO members (workspace, cohort_id, uid) VALUES (?, ?, ?)", rows)
            else:
                self._db.executemany("DELETE FROM members WHERE workspace = ? AND cohort_id = ? AND uid = ?", rows)
            self._db.execute("COMMIT")

    def edit(self, cohort_id: str, action: str, uids: list[str], workspace: str | None = None) -> bool:
        """Add or remove members of an existing segment by hand (of the one workspace that has that
        cohort, unless one is named); False when there is no such segment."""
        found = self.segment(cohort_id, workspace)
        if found is None:
            return False
        rows = [(found["workspace"], cohort_id, uid) for uid in uids]
        with self._lock:
            self._db.execute("BEGIN")
            if action == Action.ADD:
                self._db.executemany("INSERT OR IGNORE INTO members (workspace, cohort_id, uid) VALUES (?, ?, ?)", rows)
            else:
                self._db.executemany("DELETE FROM members WHERE workspace = ? AND cohort_id = ? AND uid = ?", rows)
            self._db.execute("COMMIT")
        return True

    def count(self, workspace: str) -> int:
        """Segments in one workspace (MoEngage caps them)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM segments WHERE workspace = ?", (workspace,)).fetchone()[0]

    def exists(self, workspace: str, cohort_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM segments WHERE workspace = ? AND cohort_id = ?",
                                    (workspace, cohort_id)).fetchone() is not None

    def segments(self, workspace: str | None = None) -> list[dict]:
        """Every segment with its size, of one workspace or of all."""
        where, args = ("WHERE s.workspace = ?", (workspace,)) if workspace is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT s.workspace, s.cohort_id, s.cohort_name, s.description, s.partner, s.unmatched, s.created_at,"
                " s.updated_at, (SELECT COUNT(*) FROM members m WHERE m.workspace = s.workspace"
                " AND m.cohort_id = s.cohort_id) FROM segments s " + where + " ORDER BY s.workspace, s.cohort_id",
                args).fetchall()
        return [dict(zip(_KEYS, r)) for r in rows]

    def segment(self, cohort_id: str, workspace: str | None = None) -> dict | None:
        """One segment with its members; without a workspace, the only one of that id (ValueError if several)."""
        found = [s for s in self.segments(workspace) if s["cohort_id"] == cohort_id]
        if len(found) > 1:
            raise ValueError(f"{cohort_id} is a segment in workspaces {', '.join(s['workspace'] for s in found)}: "
                             "name one with ?workspace=")
        if not found:
            return None
        with self._lock:
            uids = [r[0] for r in self._db.execute(
                "SELECT uid FROM members WHERE workspace = ? AND cohort_id = ? ORDER BY uid",
                (found[0]["workspace"], cohort_id))]
        return {**found[0], "members": uids}

    def reset(self) -> None:
        with self._lock:
            self._db.executescript("DELETE FROM members; DELETE FROM segments;")

    def close(self) -> None:
        with self._lock:
            self._db.close()
