"""Computing plans: the I/O around the pure diff (sources in, state in, changes spilled out).

A plan streams: desired and synced uids are merged in order, and the adds and removes are
written to temporary files as they are found, counted and packed into a request estimate on
the way. Memory stays bounded; apply then reads the spilled changes back.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Iterator

from reconciler.common.actions import Action
from reconciler.moengage.batching import Envelope
from reconciler.planning.diffs import Tally, merge_diff
from reconciler.common.errors import CohortApiError, SourceError, StateError
from reconciler.sources.ordering import OutOfOrder, as_text, checked, external_sort, gnu_sort_available
from reconciler.planning import textdiff
from reconciler.planning.paths import COMM, FILE, HELPER, SORT_FILE, SORT_INTO_COMM, Facts, Path, choose
from reconciler.planning.refusals import HeldBack, held_back
from reconciler.planning.readahead import ReadAhead, SyncedMembers, shareable, synced_members
from reconciler.planning.resync import resync_diff
from reconciler.planning.spills import PreparedPlan, Spill, chained, gc_paused, hashing, reading
from reconciler.planning.unconfirmed import Unconfirmed
from reconciler.planning.plans import (CHANGED, ERROR, ORPHANED, SAMPLES, UNCHANGED, CohortPlan, guard_verdict,
                                       verdict)
from reconciler.settings.model import DEFAULT_WORKSPACE, Settings
from reconciler.snapshots.diffing import checked_diff
from reconciler.snapshots.placement import WAREHOUSE, Keeping, Members, Placement, SnapshotMembers, Snapshots
from reconciler.sources.reading import Engines, FileSource, Source, open_source
from reconciler.specs.cohorts import CohortSpec
from reconciler.state.records import CohortRecord
from reconciler.state.store import StateStore

log = logging.getLogger(__name__)


class Planner:
    def __init__(self, settings: Settings, state: StateStore, engines: Engines, *, digest_desired: bool = False) -> None:
        self.settings, self.state, self.engines = settings, state, engines
        self.digest_desired = digest_desired  # saved plans fingerprint SQL cohorts by their desired set
        self.snapshots = Snapshots(state, engines, settings.statement_timeout)

    def envelope(self, action: str, cohort_id: str, name: str, description: str | None) -> Envelope:
        return Envelope(action, self.settings.partner, cohort_id, name, description)

    def plan_cohort(self, spec: CohortSpec, record: CohortRecord | None, *, force: bool = False,
                    workspace: str = DEFAULT_WORKSPACE, retry_refused: bool = False) -> PreparedPlan:
        """Diff one cohort's source against its synced members in one workspace."""
        plan = _plan_for(spec, record, workspace)
        prepared = PreparedPlan(plan)
        uncertain = Unconfirmed([], set())
        try:
            placement = self._place(prepared, spec, record)
            source = open_source(spec, self.engines, self.settings.statement_timeout)
            plan.source_digest = source.digest()
            if _unchanged_since(record, spec, plan.source_digest) and not (retry_refused and plan.refused):
                plan.desired = record.synced_count  # type: ignore[union-attr]
                log.debug("cohort %s: spec and source unchanged since it converged", plan.key)
                return prepared
            prepared.held = held_back(self.state, plan, record, retry_refused)
            if placement.diff == WAREHOUSE:
                uncertain = self._diff_in_warehouse(prepared, spec, record, placement)
            else:
                members = self._members(prepared, record)
                uncertain = self.unconfirmed(plan.key, plan.unconfirmed, members)
                self._diff(prepared, spec, source, record, uncertain, members)
        except (SourceError, CohortApiError, StateError, OSError) as exc:  # OSError: a sort, a spill to disk
            return _failed(prepared, exc)
        guard = guard_verdict(allow_empty=spec.allow_empty, max_removals=spec.max_removals, desired=plan.desired or 0,
                              synced=plan.synced + uncertain.absent, removes=plan.removes)
        verdict(plan, suspended=spec.suspended, guard=guard, force=force)
        return prepared

    def plan_resync(self, spec: CohortSpec, record: CohortRecord | None, *, force: bool = False,
                    workspace: str = DEFAULT_WORKSPACE, retry_refused: bool = False) -> PreparedPlan:
        """Every desired uid re-sent, and (mirror) every leaver not desired now removed; guards apply.

        Without a changelog (`changelog.retention: 0`) only the uncertain uids count as leavers.
        """
        plan = _plan_for(spec, record, workspace)
        plan.resync = True
        prepared = PreparedPlan(plan)
        try:
            self._place(prepared, spec, record)
            members = self._members(prepared, record)
            source = open_source(spec, self.engines, self.settings.statement_timeout)
            plan.source_digest = source.digest()
            prepared.held = held_back(self.state, plan, record, retry_refused)
            with gc_paused(), reading(source) as chunks:
                self._spill_resync(prepared, spec, external_sort(chunks), members)
        except (SourceError, CohortApiError, StateError, OSError) as exc:
            return _failed(prepared, exc)
        guard = guard_verdict(allow_empty=spec.allow_empty, max_removals=spec.max_removals, desired=plan.desired or 0,
                              synced=plan.synced, removes=plan.removes)
        verdict(plan, suspended=spec.suspended, guard=guard, force=force)
        if not self.settings.changelog.logs and spec.mode == "mirror" and plan.status == CHANGED:
            plan.reason = plan.reason or ("no changelog (changelog.retention: 0): resync can only re-add; "
                                          "uids that left earlier are not removed")
        return prepared

    def _spill_resync(self, prepared: PreparedPlan, spec: CohortSpec, desired: Iterable[list[str]],
                      members: Members) -> None:
        plan, mirror = prepared.plan, spec.mode == "mirror"
        spills = (self._spill(Action.ADD, plan), self._spill(Action.ADD, plan, resend=True),
                  self._spill(Action.REMOVE, plan), self._spill(Action.REMOVE, plan, resend=True))
        prepared.adds, prepared.re_adds, prepared.removes, prepared.re_removes = spills
        leavers: Iterable[list[str]] = ()
        if mirror:
            leavers = external_sort(chained(self.state.changelog.leavers(plan.key), self.state.unconfirmed_uids(plan.key)))
        tally, held = Tally(), prepared.held or HeldBack()
        for part in resync_diff(desired, members.in_order(), leavers, tally):
            spills[0].write(held.adds(part.adds))
            spills[1].write(part.re_adds)
            if mirror:
                spills[2].write(held.removes(part.removes))
                spills[3].write(part.re_removes)
        plan.desired, plan.synced = tally.desired, tally.synced
        plan.adds, plan.removes = spills[0].count + spills[1].count, spills[2].count + spills[3].count
        plan.requests = sum(spill.requests for spill in spills)
        plan.sample_adds = (spills[0].samples + spills[1].samples)[:SAMPLES]
        plan.sample_removes = (spills[2].samples + spills[3].samples)[:SAMPLES]
        plan.refused, plan.sample_refused, plan.refused_new = held.count, held.samples, len(held.local)

    def unconfirmed(self, cohort_id: str, count: int, members: Members) -> Unconfirmed:
        """The cohort's uncertain uids and which of them are members; nothing is read when there are none."""
        if not count:
            return Unconfirmed([], set())
        uids = self.state.unconfirmed_uids(cohort_id)
        return Unconfirmed(uids, members.present_among(uids))

    def _place(self, prepared: PreparedPlan, spec: CohortSpec | None, record: CohortRecord | None) -> Placement:
        """Where the cohort's members are and should be (snapshots/placement.py): the plan says how it diffs."""
        placement = prepared.placement = self.snapshots.placement(spec, record, prepared.plan.key)
        prepared.plan.diff = placement.diff
        if placement.moving and not (placement.now is None and placement.diff == WAREHOUSE):  # not a mere creation
            prepared.plan.moves = "warehouse" if placement.wanted is not None else "local"
        return placement

    def _members(self, prepared: PreparedPlan, record: CohortRecord | None) -> Members:
        """Where the members are read from for a diff made here: the local state, or the snapshot they are
        kept in (its mark checked first, and kept for apply's writes)."""
        if record is None or not record.snapshot:
            return self.snapshots.members(record, prepared.plan.key)
        prepared.keeping = self.snapshots.keeping(record)
        assert prepared.keeping is not None
        return SnapshotMembers(prepared.keeping.snapshot)

    def _diff_in_warehouse(self, prepared: PreparedPlan, spec: CohortSpec, record: CohortRecord | None,
                           placement: Placement) -> Unconfirmed:
        """The diff run by the warehouse (snapshots/diffing.py): only the changes come back to be spilled."""
        plan, kept = prepared.plan, placement.now is not None
        assert placement.wanted is not None and spec.source.sql is not None
        snapshot = self.snapshots.open(placement.wanted, plan.key)
        known = record.mark if kept and record is not None else None
        with gc_paused():
            trust, changes = checked_diff(snapshot, known, lambda: set(self.state.unconfirmed_uids(plan.key)),
                                          spec.id, spec.source.sql)
        mark, plan.warehouse_rows = trust.mark, changes.rows
        try:
            if kept:
                prepared.keeping = Keeping(snapshot, mark, trust.unrecorded)
            members = SnapshotMembers(snapshot) if kept else self.snapshots.members(record, plan.key)
            uncertain = self.unconfirmed(plan.key, plan.unconfirmed, members)
            tally, digest = Tally(synced=mark.count), hashlib.sha256(repr(mark).encode())
            pairs = _counted(changes.added(), changes.removed(), tally, digest if self.digest_desired else None)
            self._spill_pairs(prepared, spec, pairs, uncertain)
            plan.desired, plan.synced = tally.desired, tally.synced
            if self.digest_desired:
                plan.desired_digest = digest.hexdigest()  # the snapshot and the changes: the desired set exactly
        finally:
            changes.close()
        return uncertain

    def plan_orphan(self, record: CohortRecord, *, prune: bool, reason: str | None = None) -> PreparedPlan:
        """A cohort in state whose spec is gone: reported, emptied only when pruning."""
        plan = CohortPlan(record.cohort, record.name, ORPHANED, description=record.description,
                          workspace=record.workspace, synced=record.synced_count,
                          unconfirmed=record.unconfirmed, unconfirmed_since=record.unconfirmed_since)
        prepared = PreparedPlan(plan)
        if not prune:
            plan.reason = reason or "its spec is gone; members left as they are (prune to empty it)"
            return prepared
        try:
            members = self._members(prepared, record)
            prepared.removes = self._spill(Action.REMOVE, plan)
            for chunk in members.in_order():
                prepared.removes.write(chunk)
            uncertain = self.unconfirmed(record.id, record.unconfirmed, members)
        except (StateError, OSError) as exc:
            return _failed(prepared, exc)
        prepared.re_removes = self._spill(Action.REMOVE, plan, resend=True)
        prepared.re_removes.write([u for u in uncertain.uids if u not in uncertain.present])
        plan.desired, plan.removes = 0, prepared.removes.count + prepared.re_removes.count
        plan.requests = prepared.removes.requests + prepared.re_removes.requests
        plan.sample_removes = (prepared.removes.samples + prepared.re_removes.samples)[:SAMPLES]
        plan.reason = "its spec is gone; pruning empties it"
        return prepared

    def _diff(self, prepared: PreparedPlan, spec: CohortSpec, source: Source, record: CohortRecord | None,
              uncertain: Unconfirmed, members: Members) -> None:
        """Diff by the path paths.choose names: for a big cohort a helper reads the state and GNU comm compares;
        members kept in a warehouse snapshot are read from it here, in this process."""
        synced: SyncedMembers | None = None
        elsewhere = isinstance(members, SnapshotMembers)
        facts = self._facts(source, record.synced_count if record else 0, helper_possible=not elsewhere)
        path = self._path(facts, source)
        try:  # from before the helper starts, so that even Ctrl-C on the next line stops it
            synced = members if elsewhere else synced_members(self.state, prepared.plan.key, path.reader == HELPER)
            if path.reader == HELPER and not isinstance(synced, ReadAhead):  # it could not start
                path = self._path(dataclasses.replace(facts, helper_possible=False), source)
            log.debug("cohort %s: %s", prepared.plan.key, path)
            with gc_paused():
                try:
                    self._diff_in_order(prepared, spec, source, synced, path, uncertain)
                except textdiff.ToolFailed as exc:
                    log.warning("cohort %s: %s; diffing it in Python instead", prepared.plan.key, exc)
                    prepared.close()
                    python = choose(dataclasses.replace(facts, tools=False, gnu_sort=False))
                    self._diff_in_order(prepared, spec, source, synced, python, uncertain.fresh())
        finally:
            if synced is not None:
                synced.close()

    def _facts(self, source: Source, synced: int, helper_possible: bool = True) -> Facts:
        text_file = isinstance(source, FileSource) and source.plain_text
        return Facts(synced, self.settings.parallel_plan_min, helper_possible and shareable(self.state),
                     textdiff.available(), gnu_sort_available(), text_file, plain_file=False, digest=self.digest_desired)

    @staticmethod
    def _path(facts: Facts, source: Source) -> Path:
        """The decision; a plain file is looked at (a read of it) only when comm would take it as it is."""
        path = choose(facts)
        if path.comparer == COMM and isinstance(source, FileSource) and source.plain_ascii():
            path = choose(dataclasses.replace(facts, plain_file=True))
        return path

    def _diff_in_order(self, prepared: PreparedPlan, spec: CohortSpec, source: Source, synced: SyncedMembers,
                       path: Path, uncertain: Unconfirmed) -> None:
        """Stream the source as it comes; if it is not in order, sort it the path's way and diff again."""
        tools = path.comparer == COMM
        if path.desired == FILE:
            assert isinstance(source, FileSource)
            return self._spill_diff(prepared, spec, str(source.path), synced, tools, uncertain)
        try:
            with reading(source) as chunks:
                return self._spill_diff(prepared, spec, checked(chunks), synced, tools, uncertain)
        except OutOfOrder as exc:
            log.debug("cohort %s: source not in order (%s); %s", prepared.plan.key, exc, path.unsorted)
            prepared.close()
        if path.unsorted == SORT_INTO_COMM:
            with reading(source) as chunks:
                return self._spill_diff(prepared, spec, chunks, synced, tools, uncertain.fresh(), unsorted=True)
        if path.unsorted == SORT_FILE:
            assert isinstance(source, FileSource)
            try:
                return self._spill_diff(prepared, spec, checked(source.sorted_by_tool()), synced, tools,
                                        uncertain.fresh())
            except (OutOfOrder, SourceError) as exc:
                log.debug("cohort %s: sorting the file as is did not do (%s); sorting it uid by uid",
                          prepared.plan.key, exc)
                prepared.close()
        with reading(source) as chunks:
            self._spill_diff(prepared, spec, external_sort(chunks), synced, tools, uncertain.fresh())

    def _spill_diff(self, prepared: PreparedPlan, spec: CohortSpec, desired: Iterable[list[str]] | str,
                    synced: SyncedMembers, tools: bool, uncertain: Unconfirmed, *, unsorted: bool = False) -> None:
        """Diff desired (sorted chunks, chunks in any order for the tools, or a plain file's path)
        against synced, into the spills."""
        plan = prepared.plan
        tally = Tally()
        digest = hashlib.sha256() if self.digest_desired and not isinstance(desired, str) else None
        if digest is not None:
            desired = hashing(desired, digest)  # type: ignore[arg-type]
        if tools:
            assert isinstance(synced, ReadAhead)
            text = desired if isinstance(desired, str) else as_text(desired)
            pairs = textdiff.comm_diff(text, synced.text_blocks(), tally, unsorted=unsorted)
        else:
            assert not isinstance(desired, str)
            pairs = merge_diff(desired, synced, tally)
        self._spill_pairs(prepared, spec, pairs, uncertain)
        plan.desired, plan.synced = tally.desired, tally.synced
        if digest is not None:
            plan.desired_digest = digest.hexdigest()

    def _spill_pairs(self, prepared: PreparedPlan, spec: CohortSpec, pairs: Iterable[tuple[list[str], list[str]]],
                     uncertain: Unconfirmed) -> None:
        """(adds, removes) as a diff yields them (each list ascending) into the spills, less what is held back;
        then the re-sends the uncertain uids need, and the plan's counts."""
        plan = prepared.plan
        prepared.re_adds = prepared.re_removes = None  # from an attempt that started over
        prepared.adds = adds = self._spill(Action.ADD, plan)
        prepared.removes = removes = self._spill(Action.REMOVE, plan)
        held = prepared.held = (prepared.held or HeldBack()).fresh()
        mirror = spec.mode == "mirror"
        for added, removed in pairs:
            adds.write(held.adds(added))
            if mirror:
                removes.write(held.removes(removed))
            if uncertain:
                uncertain.note(added, removed)
        self._spill_resends(prepared, uncertain, mirror)
        spills = prepared.spills()
        plan.adds = sum(s.count for s in spills if s.envelope.action == Action.ADD)
        plan.removes = sum(s.count for s in spills if s.envelope.action == Action.REMOVE)
        plan.requests = sum(s.requests for s in spills)
        plan.sample_adds = (adds.samples + (prepared.re_adds.samples if prepared.re_adds else []))[:SAMPLES]
        plan.sample_removes = (removes.samples + (prepared.re_removes.samples if prepared.re_removes else []))[:SAMPLES]
        plan.refused, plan.sample_refused, plan.refused_new = held.count, held.samples, len(held.local)

    def _spill_resends(self, prepared: PreparedPlan, uncertain: Unconfirmed, mirror: bool) -> None:
        """Uncertain uids the diff did not cover; in add_only the undesired ones just stay uncertain."""
        if not uncertain:
            return
        re_adds, re_removes = uncertain.resends()
        prepared.re_adds = self._spill(Action.ADD, prepared.plan, resend=True)
        prepared.re_adds.write(re_adds)
        if mirror:
            prepared.re_removes = self._spill(Action.REMOVE, prepared.plan, resend=True)
            prepared.re_removes.write(re_removes)

    def _spill(self, action: str, plan: CohortPlan, *, resend: bool = False) -> Spill:
        envelope = self.envelope(action, plan.id, plan.name, plan.description)
        return Spill(envelope, self.settings.account(plan.workspace).max_payload_bytes, resend=resend)


def _plan_for(spec: CohortSpec, record: CohortRecord | None, workspace: str) -> CohortPlan:
    """A cohort's plan in one workspace before any diff: what the spec and the state record say."""
    return CohortPlan(spec.id, spec.name, UNCHANGED, description=spec.description, workspace=workspace,
                      mode=spec.mode, file=spec.file, synced=record.synced_count if record else 0, spec_digest=spec.digest,
                      unconfirmed=record.unconfirmed if record else 0,
                      unconfirmed_since=record.unconfirmed_since if record else None,
                      refused=record.refused if record else 0,
                      reads=list(spec.source.reads))


def _counted(added: Iterable[list[str]], removed: Iterable[list[str]], tally: Tally,
             digest: "hashlib._Hash | None") -> Iterator[tuple[list[str], list[str]]]:
    """A warehouse diff's changes as (adds, removes) pairs; the desired count follows from the snapshot's:
    desired = synced - removes + adds."""
    for tag, stream in ((b"+", added), (b"-", removed)):
        for chunk in stream:
            tally.desired += len(chunk) if tag == b"+" else -len(chunk)
            if digest is not None:
                digest.update(tag + "\n".join(chunk).encode("utf-8") + b"\n")
            yield (chunk, []) if tag == b"+" else ([], chunk)
    tally.desired += tally.synced


def _failed(prepared: PreparedPlan, exc: Exception) -> PreparedPlan:
    """The plan as `error` with the reason, its spills freed: nothing is sent, nothing removed."""
    prepared.close()
    plan = prepared.plan
    plan.status, plan.reason = ERROR, f"cannot plan: {exc}" if isinstance(exc, OSError) else \
        getattr(exc, "message", str(exc))
    plan.adds = plan.removes = plan.requests = 0
    return PreparedPlan(plan)


def _unchanged_since(record: CohortRecord | None, spec: CohortSpec, source_digest: str | None) -> bool:
    """The source's digest is known without reading it, and the cohort converged on it and the spec."""
    return source_digest is not None and record is not None and record.converged_on(spec.digest, source_digest)
