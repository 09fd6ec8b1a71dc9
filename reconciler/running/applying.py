"""Executing one cohort's plan: each batch written down as pending, sent, then settled.

This is the only code that both sends and writes state. The order is the whole safety story:
the batch is recorded as pending (one transaction), it goes out, and its answer settles it
(one transaction): a 200 writes its members, a definite refusal drops the record, and no
answer at all (a timeout, a dropped connection, 5xx after the last retry, a crash or SIGKILL
in flight) leaves it pending, so the next plan knows those uids are uncertain and re-sends
whatever makes MoEngage certain again.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from reconciler.common.actions import Action
from reconciler.common.errors import (ApiError, FatalApiError, Interrupted, LeaseLost, MembersRefused, StateError,
                                     Yielded)
from reconciler.common.statuses import Status
from reconciler.moengage.batching import Batch, pack
from reconciler.moengage.client import MoEngageClient
from reconciler.planning.spills import PreparedPlan, Spill
from reconciler.planning.plans import SAMPLES, CohortPlan
from reconciler.running.bisecting import MAX_REFUSED, Bisection
from reconciler.running.progress import NoProgress, Progress
from reconciler.snapshots.moving import drop_quietly
from reconciler.snapshots.placement import Keeping
from reconciler.state.fencing import Fence
from reconciler.state.records import ChangeNote, Counts, Ending, RunRecord, SnapshotMark
from reconciler.state.store import StateStore

log = logging.getLogger(__name__)
YIELD_AFTER = 4.0  # seconds a routine cohort runs before it gives way, between batches, to urgent work


@dataclass
class CohortOutcome(Counts):
    """What happened to one cohort in one run."""

    plan: CohortPlan
    result: Status  # converged, pruned, failed, unconfirmed, interrupted, or the plan's status when nothing was sent
    seconds: float = 0.0
    error: str | None = None
    fatal: bool = False  # MoEngage refused the credentials or the account: nothing more goes to that workspace
    yielded: bool = False  # set aside between batches for more urgent work: the rest is sent after it
    refused_now: list[str] = field(default_factory=list)  # uids MoEngage refused in this run (bisected)
    bisect_requests: int = 0  # requests spent finding them
    keeping: Keeping | None = field(default=None, repr=False)  # the warehouse snapshot its members are written to

    @property
    def ok(self) -> bool:
        return self.result.ok

    def as_json(self) -> dict:
        return {**self.plan.as_json(), "result": self.result, "sent_adds": self.sent_adds,
                "sent_removes": self.sent_removes, "requests_sent": self.requests, "retries": self.retries,
                "throttled": self.throttled, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "unconfirmed_sent": self.unconfirmed, "error": self.error, **self.refused_json()}

    @property
    def refused(self) -> int:
        """Uids of this cohort not sent or not accepted in this run: held back by the plan, or refused now."""
        return self.plan.refused + len(self.refused_now)

    @property
    def sample_refused(self) -> list[str]:
        return (self.refused_now + self.plan.sample_refused)[:SAMPLES]

    def refused_json(self) -> dict:
        """The refused fields, only when there are any: JSON keeps its shape otherwise."""
        if not self.refused:
            return {}
        return {"refused": self.refused, "sample_refused": self.sample_refused,
                "refused_now": len(self.refused_now), "bisect_requests": self.bisect_requests}


class Applier:
    """Sends plans and settles their batches; one per reconciler, shared by its workspaces' threads.

    `stop` is looked at before each batch: a shutdown lets the batch in flight finish and settle,
    and leaves the rest for the next run. With `changelog`, each settled batch is logged with it.
    """

    def __init__(self, state: StateStore, stop: threading.Event, progress: Progress | None = None, *,
                 changelog: bool = True) -> None:
        self.state, self.stop, self.changelog = state, stop, changelog
        self.progress = progress or NoProgress()

    def execute(self, prepared: PreparedPlan, client: MoEngageClient, run: RunRecord, *,
                fence: Fence | None = None, yield_to: threading.Event | None = None) -> CohortOutcome:
        """Send one actionable plan. Raises FatalApiError (after recording it) when the run must stop.

        With a `fence` (a replica's lease on the cohort), every write checks the lease and nothing
        is sent once it may have expired; a lost lease stops the cohort with nothing more written:
        its batch in flight stays pending, for the new holder to settle. Once `yield_to` is set, a
        cohort that has run YIELD_AFTER seconds stops between batches (`yielded`): a 10M-member
        initial sync does not hold a triggered cohort up for minutes.
        """
        plan = prepared.plan
        outcome = CohortOutcome(plan, Status.FAILED, keeping=prepared.keeping)
        stats = client.stats
        start = (stats.requests, stats.retries, stats.throttled, stats.bytes_sent, time.monotonic())
        self.progress.start(plan)
        lost = False
        try:
            self._claim(outcome.keeping, plan.key, fence)
            self.note_refusals(prepared, fence)
            for spill in prepared.spills():
                note = change_note(plan, spill, run.run_id) if self.changelog else None
                for batch in pack(spill.envelope, spill, client.settings.max_payload_bytes):
                    if self.stop.is_set():
                        raise Interrupted("shutting down")
                    if yield_to is not None and yield_to.is_set() and time.monotonic() - start[4] > YIELD_AFTER:
                        raise Yielded("more urgent work waits")
                    self._send(batch, spill, client, run, outcome, note, fence)
            outcome.result = Status.PRUNED if plan.status == Status.ORPHANED else Status.CONVERGED
        except LeaseLost as exc:
            outcome.result, outcome.error = Status.INTERRUPTED, f"{exc}; its new holder sends the rest"
            if fence is not None:
                fence.lost(str(exc))
            lost = True  # nothing more is written for this cohort here
        except FatalApiError as exc:
            outcome.error = str(exc)
            raise
        except Yielded:
            outcome.result, outcome.yielded = Status.INTERRUPTED, True
            outcome.error = "set aside for more urgent work; the rest is sent right after it"
        except Interrupted:
            outcome.result, outcome.error = Status.INTERRUPTED, "stopped by a shutdown; the next run sends the rest"
        except (ApiError, StateError) as exc:
            outcome.error = str(exc)
            if outcome.unconfirmed:
                outcome.result = Status.UNCONFIRMED
                outcome.error = (f"{outcome.unconfirmed:,} uids sent with no answer ({exc}); "
                                 "the next plan re-sends what settles them")
            log.error("cohort %s: %s", plan.key, outcome.error)
        finally:
            self.progress.finish()
            outcome.requests = stats.requests - start[0]
            outcome.retries, outcome.throttled = stats.retries - start[1], stats.throttled - start[2]
            outcome.bytes, outcome.seconds = stats.bytes_sent - start[3], time.monotonic() - start[4]
            if not lost:
                _finish(self.state, run, outcome, fence)
        return outcome

    def note_refusals(self, prepared: PreparedPlan, fence: Fence | None = None) -> None:
        """Write down what the plan refused before sending, and drop refusals whose presence changed."""
        held = prepared.held
        if held is not None and held.writes:
            self.state.refusals.update(prepared.plan.key, Action.ADD, held.local, held.stale, fence)

    def _send(self, batch: Batch, spill: Spill, client: MoEngageClient, run: RunRecord, outcome: CohortOutcome,
              note: ChangeNote | None, fence: Fence | None, *, bisect: bool = True) -> None:
        """Pending before send, settled on answer; a batch that may have been applied stays pending.

        A 400 naming the members (or no field) refuses the batch, which is then bisected
        (bisecting.py): each part is sent as a batch of its own, with `bisect` False."""
        plan, action, state, keeping = outcome.plan, spill.envelope.action, self.state, outcome.keeping
        if fence is not None:
            fence.check_local()
        batch_id = state.begin_batch(plan.cohort, action, list(batch.uids), run.run_id,
                                     take_over=plan.unconfirmed > 0, fence=fence)
        settled = 0
        try:
            for part in client.send(batch, fence.check_local if fence is not None else None):  # parts: after a 413
                try:
                    mark = self._write_snapshot(keeping, action, list(part.uids)) if not spill.resend else None
                    state.settle_batch(batch_id, plan.key, action, list(part.uids),
                                       remaining=list(batch.uids[settled + len(part.uids):]),
                                       write_members=not spill.resend, note=note, fence=fence,
                                       clear_refused=plan.refused_retry, snapshot=mark)
                except StateError:  # accepted, not recorded: the batch stays pending, its uids uncertain
                    outcome.unconfirmed += len(batch.uids) - settled
                    raise
                settled += len(part.uids)
                outcome.count_sent(action, len(part.uids))
                self.progress.advance(len(part.uids))
                log.info("cohort %s: %s of %d uids acknowledged (%d bytes)", plan.key, action, len(part.uids),
                         len(part.body))
        except (ApiError, Interrupted) as exc:
            if exc.maybe_applied:
                outcome.unconfirmed += len(batch.uids) - settled
                raise
            state.refuse_batch(batch_id, fence)
            if not (bisect and isinstance(exc, MembersRefused)):
                raise
            self._bisect(batch, batch.uids[settled:], exc, spill, client, run, outcome, note, fence)

    def _claim(self, keeping: Keeping | None, key: str, fence: Fence | None) -> None:
        """Before the first request: the snapshot's generation moved on and recorded (snapshot.py: `claim`)."""
        if keeping is not None:
            if fence is not None:
                fence.check_local()
            mark = keeping.snapshot.claim(keeping.mark)
            self.state.adopt_snapshot(key, mark, Action.ADD, [], None, fence)
            keeping.mark = mark

    @staticmethod
    def _write_snapshot(keeping: Keeping | None, action: Action, uids: list[str]) -> SnapshotMark | None:
        """Members kept in a warehouse snapshot go there first, then the state records the mark (store.py):
        a death between the two leaves the snapshot one write ahead with these uids still pending."""
        if keeping is None:
            return None
        keeping.mark = keeping.snapshot.write(action, uids, keeping.mark)
        return keeping.mark

    def _bisect(self, batch: Batch, uids: tuple[str, ...], error: MembersRefused, spill: Spill, client: MoEngageClient,
                run: RunRecord, outcome: CohortOutcome, note: ChangeNote | None, fence: Fence | None) -> None:
        """Find the refused uids among `uids`; every part goes out (and is settled) as a batch of its own."""
        plan, action = outcome.plan, spill.envelope.action

        def send(part: tuple[str, ...]) -> None:
            self._send(Batch.build(batch.envelope, part), spill, client, run, outcome, note, fence, bisect=False)

        def refuse(uid: str, why: str) -> None:
            self.state.refuse_uids(plan.cohort, action, [(uid, why)], fence)
            outcome.refused_now.append(uid)
            self.progress.advance(1)

        bisection = Bisection(plan.key, send, refuse, limit=MAX_REFUSED - len(outcome.refused_now))
        try:
            bisection.run(uids, error)
        finally:
            outcome.bisect_requests += bisection.requests


def change_note(plan: CohortPlan, spill: Spill, run_id: str) -> ChangeNote:
    """How the changelog records this spill's batches: a resync's re-adds of members by count only
    (they would copy the whole cohort into the changelog at every resync)."""
    kind = ("resync_" if plan.resync else "") + ("resend" if spill.resend else "change")
    count_only = plan.resync and spill.resend and spill.envelope.action == Action.ADD
    return ChangeNote(run_id, plan.spec_digest, kind, with_uids=not count_only)


def _finish(state: StateStore, run: RunRecord, outcome: CohortOutcome, fence: Fence | None = None) -> None:
    """Write the run row and the cohort's outcome; a pruned orphan is forgotten."""
    plan = outcome.plan
    run.status, run.error, run.finished_at = outcome.result, outcome.error, time.time()
    run.take_counts(outcome)
    run.failed = (plan.adds - outcome.sent_adds) + (plan.removes - outcome.sent_removes) - len(outcome.refused_now)
    try:
        state.record_run(run, fence)
        if outcome.result == Status.PRUNED:
            state.forget(plan.key, fence)
            if outcome.keeping is not None:
                drop_quietly(outcome.keeping.snapshot)
        elif outcome.result == Status.CONVERGED:
            state.record_outcome(plan.cohort, Ending(Status.CONVERGED, converged=True, spec_digest=plan.spec_digest,
                                                       source_digest=plan.source_digest), fence)
            log.info("cohort %s: converged (+%d -%d)", plan.key, outcome.sent_adds, outcome.sent_removes)
        else:
            state.record_outcome(plan.cohort, Ending(outcome.result, error=outcome.error), fence)
    except LeaseLost as exc:
        outcome.result, outcome.error = Status.INTERRUPTED, f"{exc}; its new holder records the outcome"
        if fence is not None:
            fence.lost(str(exc))
    except StateError as exc:
        outcome.result, outcome.error = Status.FAILED, f"{outcome.error or ''} {exc}".strip()
