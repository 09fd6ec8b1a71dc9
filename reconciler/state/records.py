"""What the state hands out and takes in: plain records, no database behind them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from reconciler.common.actions import Action
from reconciler.state.keys import split_key


@dataclass(frozen=True)
class CohortRecord:
    id: str
    name: str
    description: str | None
    spec_digest: str | None
    source_digest: str | None
    synced_count: int
    converged: bool
    last_run_at: float | None
    last_success_at: float | None
    last_status: str | None
    last_error: str | None
    unconfirmed: int = 0  # uids of batches whose answer never came
    unconfirmed_since: float | None = None  # when the oldest of those batches was sent
    refused: int = 0  # uids MoEngage refused (or that can never be valid), held back: refused.py
    snapshot: str | None = None  # where its members are kept: a warehouse snapshot (CONNECTION/SCHEMA/TABLE), else here
    snapshot_gen: int | None = None  # that snapshot's generation as this state last wrote or saw it
    snapshot_sum: int | None = None  # and the checksum of its rows then

    @property
    def mark(self) -> "SnapshotMark | None":
        """What this state knows of its warehouse snapshot: None when its members are kept here."""
        if self.snapshot is None:
            return None
        return SnapshotMark(int(self.snapshot_gen or 0), self.synced_count, int(self.snapshot_sum or 0))

    @property
    def workspace(self) -> str:
        return split_key(self.id)[0]

    @property
    def cohort(self) -> str:
        """The cohort id (`id` is the state's key, which names the workspace too)."""
        return split_key(self.id)[1]

    def converged_on(self, spec_digest: str | None, source_digest: str | None) -> bool:
        """Whether the cohort converged on exactly this spec and source: then MoEngage already
        matches them and a plan need read nothing."""
        return bool(self.converged and source_digest and self.spec_digest == spec_digest
                    and self.source_digest == source_digest)


@dataclass(frozen=True)
class SnapshotMark:
    """A warehouse snapshot as a state knows it: generation, rows and the sum of their hashes."""

    generation: int
    count: int
    checksum: int

    def moved(self, count: int, checksum: int) -> "SnapshotMark":
        """The mark after one more write that changed the rows by (count, checksum)."""
        return SnapshotMark(self.generation + 1, self.count + count, self.checksum + checksum)


@dataclass(frozen=True)
class Cohort:
    """A cohort as MoEngage is told of it: its state key, name and description."""

    key: str
    name: str
    description: str | None = None


@dataclass(frozen=True)
class Ending:
    """How a cohort's run ended, as its state record keeps it; the digests only when it converged."""

    status: str
    error: str | None = None
    converged: bool = False
    spec_digest: str | None = None
    source_digest: str | None = None


@dataclass(frozen=True)
class PendingBatch:
    """A batch written down before it was sent; `uids` ascending."""

    id: int
    cohort_id: str
    action: str
    uids: list[str]
    carried: list[str]
    run_id: str | None
    sent_at: float


@dataclass(frozen=True)
class ChangeNote:
    """What the changelog records of a settled batch besides its uids: why it was sent."""

    run_id: str | None
    spec_digest: str | None
    kind: str = "change"  # change (members written) or resend (no member write); "resync_" before either in a resync
    with_uids: bool = True  # False: count only (a resync's re-adds of members: the whole cohort each time)


@dataclass(frozen=True)
class ChangeEntry:
    """One settled batch of one cohort, as the changelog keeps it; `uids` ascending (empty: count only)."""

    id: int
    cohort_id: str
    action: str
    kind: str
    run_id: str | None
    at: float
    spec_digest: str | None
    count: int
    uids: list[str]


@dataclass(kw_only=True)
class Counts:
    """What one cohort's run sent: kept alike by the run's outcome and by its row in history."""

    sent_adds: int = 0
    sent_removes: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    bytes: int = 0
    unconfirmed: int = 0  # uids of a batch sent with no answer

    def count_sent(self, action: str, count: int) -> None:
        if action == Action.ADD:
            self.sent_adds += count
        else:
            self.sent_removes += count

    def take_counts(self, other: "Counts") -> None:
        for f in dataclasses.fields(Counts):
            setattr(self, f.name, getattr(other, f.name))


@dataclass
class RunRecord(Counts):
    """One cohort's part of one run: what was planned, sent and failed."""

    run_id: str
    cohort_id: str
    status: str
    started_at: float
    trigger: str = "cli"
    planned_adds: int = 0
    planned_removes: int = 0
    failed: int = 0
    finished_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class RefusedUid:
    """A uid MoEngage refused (or that can never be valid), kept so that it is not sent again."""

    cohort_id: str  # the state key (workspace and cohort)
    uid: str
    presence: str  # the action refused (add_members or remove_members): the uid's desired presence then
    error: str
    since: float  # first refused
    at: float  # last refused

    def as_json(self) -> dict:
        workspace, cohort = split_key(self.cohort_id)
        return {"cohort": cohort, "workspace": workspace, "uid": self.uid, "action": self.presence,
                "error": self.error, "since": self.since, "at": self.at}
