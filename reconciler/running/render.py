"""Turning plans, run reports, status and history into text, JSON and Markdown.

Output only: nothing here decides. JSON carries `format_version` so scripts can rely on it.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from reconciler.common.statuses import Status
from reconciler.planning.plans import CohortPlan, totals
from reconciler.running.reconciling import RunReport
from reconciler.state.records import CohortRecord, RunRecord

FORMAT_VERSION = 1
GITHUB_COMMENT_LIMIT = 65_536
_MARK = {Status.UNCHANGED: " ", Status.CHANGED: "~", Status.BLOCKED: "!", Status.ERROR: "x", Status.SUSPENDED: "-",
         Status.ORPHANED: "?"}


def plan_text(plans: Sequence[CohortPlan]) -> str:
    if not plans:
        return "No cohorts found."
    lines = []
    width = max(len(p.id) for p in plans)
    several = len({p.workspace for p in plans}) > 1
    shown = None
    for p in plans:
        broken_spec = p.spec_digest is None and p.status != Status.ORPHANED  # no workspace: listed first
        if several and p.workspace != shown and not broken_spec:
            lines.append(f"{'' if shown is None else chr(10)}workspace {p.workspace}:")
            shown = p.workspace
        lines.append(f"{_MARK.get(p.status, ' ')} {p.id:<{width}}  {p.status:<9}  {_counts(p)}")
        if p.reason:
            lines.append(f"    {p.reason}")
        if p.reads:
            lines.append(f"    reads dbt {', '.join(p.reads)}")
        if p.diff == "warehouse" or p.moves:
            lines.append(f"    {_diffed(p)}")
        if p.unconfirmed:
            lines.append(f"    {_unconfirmed(p.unconfirmed, p.unconfirmed_since)}")
        if p.refused:
            lines.append(f"    {_refused(p.refused, p.sample_refused)}")
        if p.sample_adds and p.status != Status.UNCHANGED:
            lines.append(f"    + {', '.join(p.sample_adds)}{' ...' if p.adds > len(p.sample_adds) else ''}")
        if p.sample_removes and p.status != Status.UNCHANGED:
            lines.append(f"    - {', '.join(p.sample_removes)}{' ...' if p.removes > len(p.sample_removes) else ''}")
    t = totals(list(plans))
    changing = t.get(Status.CHANGED, 0) + (1 if any(p.status == Status.ORPHANED and p.removes for p in plans) else 0)
    problems = t.get(Status.BLOCKED, 0) + t.get(Status.ERROR, 0)
    if changing == 0 and not t["adds"] and not t["removes"]:
        lines.append("\nNo changes to send." if problems else "\nNo changes. MoEngage matches the specs.")
    else:
        lines.append(f"\nPlan: +{t['adds']:,} -{t['removes']:,} in {t['requests']:,} requests "
                     f"across {changing} cohort(s).")
    if problems:
        lines.append(f"{problems} cohort(s) blocked or in error: see above.")
    return "\n".join(lines)


def _counts(p: CohortPlan) -> str:
    desired = "?" if p.desired is None else f"{p.desired:,}"
    return f"desired {desired}, synced {p.synced:,}, +{p.adds:,} -{p.removes:,}, {p.requests:,} requests"


def _diffed(p: CohortPlan) -> str:
    """How the diff ran, said only where it is not the usual way (here, against the local state)."""
    how = "diffed in the warehouse, against its snapshot" if p.diff == "warehouse" else "diffed here"
    if p.moves == "warehouse":
        return f"{how}; apply first moves its members into a warehouse snapshot (nothing re-sent)"
    if p.moves == "local":
        return f"{how}; apply first moves its members out of the warehouse snapshot, into the state (nothing re-sent)"
    return how


def _unconfirmed(count: int, since: float | None) -> str:
    return (f"{count:,} uids unconfirmed (sent {_when(since)} with no answer): "
            "the plan re-sends whatever settles them")


def _refused(count: int, sample: Sequence[str]) -> str:
    shown = f" ({', '.join(sample)}{' ...' if count > len(sample) else ''})" if sample else ""
    return f"{count:,} uids refused{shown}: not sent; `cohortsync refused` lists them with MoEngage's error"


def plan_json(plans: Sequence[CohortPlan]) -> str:
    doc = {"format_version": FORMAT_VERSION, "cohorts": [p.as_json() for p in plans], "totals": totals(list(plans))}
    return json.dumps(doc, indent=2, ensure_ascii=False)


def plan_markdown(plans: Sequence[CohortPlan], limit: int = GITHUB_COMMENT_LIMIT) -> str:
    t = totals(list(plans))
    head = [f"### cohortsync plan: +{t['adds']:,} -{t['removes']:,} in {t['requests']:,} requests", "",
            "| cohort | status | desired | synced | adds | removes | requests | guards / note |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    for p in plans:
        desired = "?" if p.desired is None else f"{p.desired:,}"
        note = ("passed" if p.status == Status.CHANGED and not p.forced else p.reason) or ""
        if p.unconfirmed:
            note = f"{note}; {_unconfirmed(p.unconfirmed, p.unconfirmed_since)}" if note else \
                _unconfirmed(p.unconfirmed, p.unconfirmed_since)
        if p.reads:
            note = "; ".join(n for n in (note, "reads " + ", ".join(f"`{m}`" for m in p.reads)) if n)
        if p.diff == "warehouse" or p.moves:
            note = "; ".join(n for n in (note, _diffed(p)) if n)
        if p.refused:
            note = f"{note}; {_refused(p.refused, p.sample_refused)}" if note else _refused(p.refused, p.sample_refused)
        note = _md_cell(note)
        head.append(f"| `{p.key}` | {p.status} | {desired} | {p.synced:,} | +{p.adds:,} | -{p.removes:,} | {p.requests:,} | {note} |")
    details = []
    for p in plans:
        if p.status != Status.UNCHANGED and (p.sample_adds or p.sample_removes):
            body = [f"+ {u}" for u in p.sample_adds] + [f"- {u}" for u in p.sample_removes]
            details += [f"<details><summary><code>{p.id}</code> sample uids</summary>", "", "```diff", *body, "```",
                        "", "</details>"]
    text = "\n".join(head + [""] + details)
    if len(text) > limit:
        cut = "\n\n_Plan truncated to fit a GitHub comment; run `cohortsync plan` for the whole of it._"
        text = text[: limit - len(cut)].rsplit("\n", 1)[0] + cut
    return text


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def report_text(report: RunReport) -> str:
    lines = [f"{'Dry run' if report.dry_run else 'Apply'} {report.run_id}:"]
    width = max([len(o.plan.key) for o in report.outcomes] + [6])
    lines.append(f"  {'cohort':<{width}}  {'result':<10} {'added':>10} {'removed':>10} {'requests':>9}")
    for o in report.outcomes:
        lines.append(f"  {o.plan.key:<{width}}  {o.result:<10} {o.sent_adds:>10,} {o.sent_removes:>10,} {o.requests:>9,}")
        if o.error or (o.plan.reason and o.result in (Status.BLOCKED, Status.ERROR, Status.ORPHANED, Status.SUSPENDED)):
            lines.append(f"  {'':<{width}}  {o.error or o.plan.reason}")
        if o.refused:
            lines.append(f"  {'':<{width}}  {_refused(o.refused, o.sample_refused)}")
    if report.stopped:
        lines.append(f"\nStopped: {report.stopped}")
    failed = [o.plan.key for o in report.outcomes if not o.ok]
    if report.dry_run:
        lines.append("\nDry run: nothing was sent.")
    elif failed:
        lines.append(f"\n{len(failed)} cohort(s) did not converge: {', '.join(failed)}")
    else:
        lines.append("\nAll cohorts converged.")
    return "\n".join(lines)


def report_json(report: RunReport) -> str:
    doc = {"format_version": FORMAT_VERSION, "run_id": report.run_id, "dry_run": report.dry_run,
           "ok": report.ok, "stopped": report.stopped, "cohorts": [o.as_json() for o in report.outcomes],
           "totals": totals(report.plans)}
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "never"


def status_rows(records: dict[str, CohortRecord]) -> list[dict[str, Any]]:
    return [{"id": r.id, "cohort": r.cohort, "workspace": r.workspace, "name": r.name, "synced": r.synced_count,
             "converged": r.converged,
             "last_status": r.last_status, "last_run": _when(r.last_run_at), "last_success": _when(r.last_success_at),
             "last_error": r.last_error, "unconfirmed": r.unconfirmed,
             "unconfirmed_since": _when(r.unconfirmed_since) if r.unconfirmed_since else None,
             "refused": r.refused, "diff": "warehouse" if r.snapshot else "local", "snapshot": r.snapshot}
            for r in records.values()]


def status_text(records: dict[str, CohortRecord], holders: dict[str, str] | None = None) -> str:
    """With `holders` (several replicas on PostgreSQL), the replica holding each cohort's lease ends its line."""
    if not records:
        return "No cohorts synced yet."
    rows = status_rows(records)
    width = max(len(r["id"]) for r in rows)
    out = [f"{'cohort':<{width}}  {'synced':>10}  {'status':<10}  {'last run':<19}" + ("  held by" if holders else "")]
    for r in rows:
        held = f"  {holders.get(r['id']) or '-'}" if holders else ""
        out.append(f"{r['id']:<{width}}  {r['synced']:>10,}  {r['last_status'] or '-':<10}  {r['last_run']:<19}{held}")
        if r["last_error"]:
            out.append(f"{'':<{width}}  {r['last_error']}")
        if r["unconfirmed"]:
            out.append(f"{'':<{width}}  {r['unconfirmed']:,} uids unconfirmed since {r['unconfirmed_since']}: "
                       "the next plan settles them")
        if r["refused"]:
            out.append(f"{'':<{width}}  {r['refused']:,} uids refused, not sent: `cohortsync refused --cohort "
                       f"{r['cohort']}` lists them")
        if r["snapshot"]:
            out.append(f"{'':<{width}}  members kept in the warehouse snapshot {r['snapshot']}: diffed in the warehouse")
    return "\n".join(out)


def status_json(records: dict[str, CohortRecord], holders: dict[str, str] | None = None,
                replicas: list[dict[str, Any]] | None = None) -> str:
    """`holder` per cohort and the live `replicas` when the state is shared (null and [] otherwise)."""
    rows = [{**row, "holder": (holders or {}).get(row["id"])} for row in status_rows(records)]
    return json.dumps({"format_version": FORMAT_VERSION, "cohorts": rows, "replicas": replicas or []}, indent=2,
                      ensure_ascii=False)


def history_text(runs: list[RunRecord]) -> str:
    if not runs:
        return "No runs yet."
    out = [f"{'started':<20}  {'run':<12}  {'cohort':<24}  {'result':<10} {'+sent':>9} {'-sent':>9} {'req':>6} {'retry':>5}"]
    for r in runs:
        out.append(f"{_when(r.started_at):<20}  {r.run_id:<12}  {r.cohort_id:<24}  {r.status:<10} "
                   f"{r.sent_adds:>9,} {r.sent_removes:>9,} {r.requests:>6,} {r.retries:>5}")
        if r.unconfirmed:
            out.append(f"{'':<20}  {r.unconfirmed:,} uids sent with no answer; a later plan settles them")
        if r.error:
            out.append(f"{'':<20}  {r.error}")
    return "\n".join(out)


def history_json(runs: list[RunRecord]) -> str:
    return json.dumps({"format_version": FORMAT_VERSION, "runs": [vars(r) for r in runs]}, indent=2, ensure_ascii=False)
