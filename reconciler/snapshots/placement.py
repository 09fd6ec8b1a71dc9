"""Where a cohort's members are kept, where the config wants them, and so how its diff runs.

Members are kept in the local state (`cs_members`) or in a warehouse snapshot; the state's record
says which (`snapshot`). The config wants them in a snapshot when the cohort's query runs on a
connection with `snapshots: SCHEMA`. The diff runs in the warehouse when the members are already
in the snapshot the config wants (or there are none yet, so that snapshot can simply be made);
otherwise it runs here, reading the members from wherever they are, and apply moves them first
(moving.py). Moving never changes membership: nothing is re-sent.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from reconciler.settings.model import ConnectionSettings
from reconciler.snapshots.snapshot import Found, Location, Snapshot, engine_of
from reconciler.sources.ordering import external_sort
from reconciler.sources.reading import Engines
from reconciler.specs.cohorts import CohortSpec
from reconciler.state.records import CohortRecord, SnapshotMark
from reconciler.state.store import StateStore, synced_in_order

WAREHOUSE, LOCAL = "warehouse", "local"  # how a diff ran: plan JSON's `diff`


@dataclass(frozen=True)
class Placement:
    """Where one cohort's members are (`now`) and where the config wants them (`wanted`); None: here."""

    now: Location | None
    wanted: Location | None
    empty: bool  # none are kept anywhere yet: the wanted snapshot can simply be made

    @property
    def diff(self) -> str:
        if self.wanted is not None and (self.now == self.wanted or (self.now is None and self.empty)):
            return WAREHOUSE
        return LOCAL

    @property
    def moving(self) -> bool:
        """Whether apply moves the members before it sends (the plan's `moves` says where to)."""
        return self.now != self.wanted


def wanted_location(spec: CohortSpec | None, key: str, connections: dict[str, ConnectionSettings]) -> Location | None:
    """The snapshot the config wants this cohort's members in: its query's connection has `snapshots`."""
    if spec is None or spec.source.kind == "file":
        return None
    name = spec.source.connection or "default"
    connection = connections.get(name)
    if connection is None or connection.snapshots is None:
        return None
    return Location.of(name, connection.snapshots, key)


def place(spec: CohortSpec | None, record: CohortRecord | None, key: str,
          connections: dict[str, ConnectionSettings]) -> Placement:
    now = Location.parse(record.snapshot) if record is not None and record.snapshot else None
    empty = record is None or (record.snapshot is None and record.synced_count == 0)
    return Placement(now, wanted_location(spec, key, connections), empty)


class Members(Protocol):
    """A cohort's members wherever they are kept: looked up, or streamed in code-point order."""

    def present_among(self, uids: list[str]) -> set[str]: ...

    def in_order(self) -> Iterator[list[str]]: ...


class HereMembers:
    """Members kept in the local state."""

    def __init__(self, state: StateStore, key: str) -> None:
        self.state, self.key = state, key

    def present_among(self, uids: list[str]) -> set[str]:
        return self.state.present_among(self.key, uids)

    def in_order(self) -> Iterator[list[str]]:
        return synced_in_order(self.state, self.key)


class SnapshotMembers:
    """Members kept in a warehouse snapshot, streamed out and sorted here (a move, a prune, a resync)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def present_among(self, uids: list[str]) -> set[str]:
        return self.snapshot.present_among(uids)

    def in_order(self) -> Iterator[list[str]]:
        return external_sort(self.snapshot.chunks())

    def __iter__(self) -> Iterator[list[str]]:  # as the planner's SyncedMembers: iterable, closable
        return self.in_order()

    def close(self) -> None:
        pass


@dataclass
class Keeping:
    """The snapshot a cohort's members are kept in while apply writes them, and its mark as last written."""

    snapshot: Snapshot
    mark: SnapshotMark
    unrecorded: Found | None = None  # the warehouse's one write the state has not recorded: recorded first


class Snapshots:
    """Opens the snapshots of one state database on the config's connections."""

    def __init__(self, state: StateStore, engines: Engines, timeout: float) -> None:
        self.state, self.engines, self.timeout = state, engines, timeout
        self._state_id: str | None = None

    def open(self, location: Location, key: str) -> Snapshot:
        if self._state_id is None:
            self._state_id = self.state.state_id()
        return Snapshot(engine_of(self.engines, location), location, key, self._state_id, self.timeout)

    def keeping(self, record: CohortRecord) -> Keeping | None:
        """The snapshot the state keeps this cohort's members in, its mark checked (snapshot.py:
        `trusted`); None when they are kept here. SnapshotError when it cannot be trusted."""
        if not record.snapshot:
            return None
        snapshot = self.open(Location.parse(record.snapshot), record.id)
        with snapshot.reading() as conn:
            trust = snapshot.trusted(conn, record.mark, lambda: set(self.state.unconfirmed_uids(record.id)))
        return Keeping(snapshot, trust.mark, trust.unrecorded)

    def members(self, record: CohortRecord | None, key: str) -> Members:
        """Where this cohort's members are kept now."""
        if record is not None and record.snapshot:
            return SnapshotMembers(self.open(Location.parse(record.snapshot), key))
        return HereMembers(self.state, key)

    def placement(self, spec: CohortSpec | None, record: CohortRecord | None, key: str) -> Placement:
        return place(spec, record, key, self.engines.connections)
