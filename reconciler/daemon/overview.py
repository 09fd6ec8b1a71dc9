"""The documents behind the status page: /status and /cohorts/{id}/status.json.

The state database knows what was synced; only the running daemon knows its timers, its queue,
the rate window and the verdict of its latest run (a spec that fails to load is never written
to the state). The daemon copies those live facts into a `Live` under its lock, and the
functions here join the two without I/O or a clock, so they are tested as plain tables.
The JSON only grows: every field `/status` had keeps its name and meaning; new facts are new
fields, and the page reads the fields other issues add (`unconfirmed`, `workspace`, leases)
when they are there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.common.statuses import HEALTHY, Status
from reconciler.daemon.queueing import Work
from reconciler.running import render
from reconciler.settings.model import RateLimit
from reconciler.specs.cohorts import CohortSpec, SpecSet
from reconciler.state.records import CohortRecord, RunRecord

FORMAT_VERSION = 1
PENDING = "pending"  # the page's word for a cohort no run has seen yet


@dataclass(frozen=True)
class Verdict:
    """A cohort's result in this daemon's latest run of it, and why it did not converge."""

    result: str
    reason: str | None
    at: float  # epoch seconds


@dataclass(frozen=True)
class Live:
    """What only the running daemon knows, copied under its lock for one answer."""

    now: float  # epoch seconds when the copy was taken
    started_at: float  # epoch seconds
    cohorts_dir: Path
    specs: SpecSet | None  # None until the first load
    ready: tuple[bool, str]
    rate: RateLimit
    rate_in_use: int  # places taken in the current window
    rates: list[tuple[str, RateLimit, int]] = field(default_factory=list)  # each workspace: its limit, places taken
    interval: float = 900.0  # seconds: the schedule of a cohort that names none
    due: dict[str, float] = field(default_factory=dict)  # cohort id -> epoch seconds of its next timer
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    last_run: dict[str, Any] = field(default_factory=dict)
    pending: Work | None = None
    running: Work | None = None
    running_since: float | None = None  # epoch seconds
    replica: dict[str, Any] | None = None  # this daemon: id, host, pid, mode, cohorts it holds
    replicas: list[dict[str, Any]] = field(default_factory=list)  # every live one, with how many cohorts each holds
    holders: dict[str, str] = field(default_factory=dict)  # state key -> the replica holding its lease


def spec_errors(specs: SpecSet | None) -> dict[str, tuple[str, str]]:
    """Cohort id (or the file, when no id could be read) -> (spec file, every message about it)."""
    if specs is None:
        return {}
    by_file: dict[str, list[str]] = {}
    for err in specs.errors:
        by_file.setdefault(err.file, []).append(str(err))
    return {specs.broken.get(file) or file: (file, "; ".join(msgs)) for file, msgs in sorted(by_file.items())}


def status_document(records: dict[str, CohortRecord], changes: dict[str, RunRecord], live: Live) -> dict[str, Any]:
    """/status: the old fields as they were, then the daemon's health, queue, timers and rate."""
    broken = spec_errors(live.specs)
    specs = live.specs.specs if live.specs else {}
    rows = [cohort_row(base, records[base["id"]], live, broken, changes) for base in render.status_rows(records)]
    unseen = sorted((set(specs) | set(broken)) - set(records))
    return {
        "format_version": FORMAT_VERSION,
        "cohorts": rows,
        "last_run": live.last_run,
        "queue_pending": live.pending is not None,
        "new_cohorts": [cohort_row(new_base(cid, specs.get(cid)), None, live, broken, changes) for cid in unseen],
        "spec_errors": [{"cohort": cid if cid != file else None, "file": file, "error": msg}
                        for cid, (file, msg) in broken.items()],
        "generated_at": live.now,
        "daemon": {"version": __version__, "started_at": live.started_at, "interval": live.interval},
        "ready": {"ok": live.ready[0], "reason": live.ready[1]},
        "queue": work_json(live.pending),
        "running": None if live.running is None else {**work_json(live.running), "since": live.running_since},
        "next_timer": next_timer(live.due, live.now),
        "rate": rate_json(live.rate, live.rate_in_use),
        "rates": [{"workspace": name, **rate_json(limit, in_use)} for name, limit, in_use in live.rates],
        "replica": live.replica,
        "replicas": live.replicas,
    }


def rate_json(limit: RateLimit, in_use: int) -> dict[str, Any]:
    return {"limit": str(limit), "requests": limit.requests, "window": limit.window, "in_use": in_use}


def new_base(cohort_id: str, spec: CohortSpec | None) -> dict[str, Any]:
    """The fields of render.status_rows for a cohort the state has never seen."""
    return {"id": cohort_id, "name": spec.name if spec else "", "synced": 0, "converged": False, "last_status": None,
            "last_run": "never", "last_success": "never", "last_error": None, "refused": 0,
            "diff": "local", "snapshot": None}


def cohort_row(base: dict[str, Any], record: CohortRecord | None, live: Live, broken: dict[str, tuple[str, str]],
               changes: dict[str, RunRecord]) -> dict[str, Any]:
    """One cohort's row: its status fields from the state, then what the page shows beside them."""
    cid = base["id"]
    spec = live.specs.specs.get(cid) if live.specs else None
    status, reason = standing(record, live.verdicts.get(cid), broken.get(cid, (None, None))[1])
    due = live.due.get(cid)
    change = changes.get(cid)
    return {
        **base,
        "next_run_in": round(due - live.now, 1) if due is not None else None,
        "status": status,
        "reason": reason,
        "mode": spec.mode if spec else None,
        "file": spec.file if spec else broken.get(cid, (None, None))[0],
        "suspended": spec.suspended if spec else None,
        "schedule": spec.schedule if spec else None,
        "next_run_at": due,
        "last_run_at": record.last_run_at if record else None,
        "last_success_at": record.last_success_at if record else None,
        "last_change": None if change is None else {
            "run_id": change.run_id, "at": change.finished_at or change.started_at, "adds": change.sent_adds,
            "removes": change.sent_removes, "result": change.status},
        "holder": live.holders.get(cid),
    }


def standing(record: CohortRecord | None, verdict: Verdict | None, spec_error: str | None) -> tuple[str, str | None]:
    """The status word and the full reason: the spec as loaded now, else this daemon's verdict, else the state."""
    if spec_error:
        return Status.ERROR.value, spec_error
    if verdict is not None:
        status, reason = verdict.result, verdict.reason
    elif record is not None and record.last_status:
        status, reason = record.last_status, record.last_error
    else:
        return PENDING, None
    if status == Status.UNCHANGED:
        status = Status.CONVERGED
    return str(status), None if status in HEALTHY else reason


def work_json(work: Work | None) -> dict[str, Any] | None:
    if work is None:
        return None
    return {"cohorts": "all" if work.everything else sorted(work.cohorts), "reasons": sorted(work.reasons)}


def next_timer(due: dict[str, float], now: float) -> dict[str, Any] | None:
    """The soonest timer and the cohorts it fires for."""
    if not due:
        return None
    at = min(due.values())
    return {"at": at, "in": round(max(at - now, 0.0), 1), "cohorts": sorted(c for c, t in due.items() if t == at)}


def spec_json(spec: CohortSpec, cohorts_dir: Path) -> dict[str, Any]:
    """A spec as the page shows it: paths relative to the cohorts directory, the query text, never a URL."""
    src = spec.source
    path = None
    if src.path is not None:
        try:
            path = str(src.path.relative_to(cohorts_dir.resolve()))
        except ValueError:
            path = src.path.name
    return {"file": spec.file, "description": spec.description, "mode": spec.mode, "schedule": spec.schedule,
            "suspended": spec.suspended, "allow_empty": spec.allow_empty,
            "max_removals": None if spec.max_removals is None else str(spec.max_removals),
            "source": {"kind": src.kind, "connection": src.connection, "path": path, "column": src.column,
                       "sql": src.sql if src.kind in ("sql", "sql_file", "dbt_model") else None,
                       **({"dbt_model": src.model, "relation": src.relation} if src.model else {})}}


def series(runs: list[RunRecord], synced_now: int) -> list[dict[str, Any]]:
    """One point per run, oldest first: its adds and removes, and the size it left.

    The runs table does not store sizes; members change only in runs that sent, so walking back
    from today's count and undoing each run's sends gives the size after each one.
    """
    points, size = [], synced_now
    for run in runs:  # newest first
        points.append({"run_id": run.run_id, "at": run.finished_at or run.started_at, "status": run.status,
                       "size": size, "adds": run.sent_adds, "removes": run.sent_removes})
        size = max(size - run.sent_adds + run.sent_removes, 0)
    return points[::-1]


def cohort_document(cohort_id: str, status: dict[str, Any], runs: list[RunRecord], live: Live) -> dict[str, Any] | None:
    """/cohorts/{id}/status.json: the cohort's row of `status`, its spec, its runs and the charted series."""
    row = next((r for r in status["cohorts"] + status["new_cohorts"] if r["id"] == cohort_id), None)
    if row is None:
        return None
    spec = live.specs.specs.get(cohort_id) if live.specs else None
    return {"format_version": FORMAT_VERSION, "cohort": row,
            "spec": spec_json(spec, live.cohorts_dir) if spec else None,
            "runs": [vars(r) for r in runs], "series": series(runs, row["synced"]),
            "generated_at": live.now}
