"""`cohortsync state check`: the state's own invariants, and what is wrong when one fails.

A pending batch may outlive any number of runs (its uids are unconfirmed until a plan settles
them), so age is no fault. What must hold: the schema is the one this cohortsync writes; a uid
is pending in at most one batch of its cohort (the plan's re-send rests on it); each pending
batch's and changelog entry's count is its number of uids; each cohort's `synced_count` is its
number of member rows (or, for members kept in a warehouse snapshot, none are here); no members
belong to a cohort without a record, nor do refused uids.
"""
from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from reconciler.common.errors import StateError
from reconciler.state.database import decode
from reconciler.state.refused import digest
from reconciler.state.schema import SCHEMA_VERSION, batches, changelog, cohorts, members, refused
from reconciler.state.store import StateStore


def check_state(store: StateStore) -> list[str]:
    """Every broken invariant, one sentence each; empty when the state is sound."""
    try:
        version = store.schema_version()
    except StateError as exc:
        return [f"no cohortsync state here ({exc})"]
    if version != SCHEMA_VERSION:  # the other checks read this version's tables
        return [f"schema version {version}, this cohortsync writes {SCHEMA_VERSION}: run any command that "
                "opens the state (say `cohortsync status`) to migrate it"]
    problems = _counts(store)
    problems += _pending(store)
    problems += _changelog(store)
    problems += _refused(store)
    return problems


def _counts(store: StateStore) -> list[str]:
    """Member rows against synced_count; a cohort whose members are kept in a warehouse snapshot has none
    here (its snapshot is checked against its mark by snapshots/checking.py)."""
    with store.engine.connect() as conn:
        recorded = {cid: (n, where) for cid, n, where in conn.execute(
            sa.select(cohorts.c.id, cohorts.c.synced_count, cohorts.c.snapshot))}
        rows = dict(conn.execute(sa.select(members.c.cohort_id, sa.func.count()).group_by(members.c.cohort_id)).all())
    problems = [f"cohort {cid}: synced_count {n:,} but {rows.get(cid, 0):,} member rows"
                for cid, (n, where) in sorted(recorded.items()) if where is None and n != rows.get(cid, 0)]
    problems += [f"cohort {cid}: its members are kept in the warehouse snapshot {where}, yet {rows[cid]:,} member "
                 "rows are here" for cid, (n, where) in sorted(recorded.items()) if where is not None and rows.get(cid)]
    problems += [f"{n:,} member rows of {cid}, which has no cohort record" for cid, n in sorted(rows.items())
                 if cid not in recorded]
    return problems


def _pending(store: StateStore) -> list[str]:
    problems: list[str] = []
    seen: dict[str, Counter[str]] = {}
    with store.engine.connect() as conn:
        for row in conn.execute(sa.select(batches).order_by(batches.c.id)):
            uids = decode(row.uids)
            if len(uids) != row.count:
                problems.append(f"pending batch {row.id} of {row.cohort_id}: count {row.count} but {len(uids)} uids")
            seen.setdefault(row.cohort_id, Counter()).update(set(uids))
    for cid, counts in sorted(seen.items()):
        twice = sorted(u for u, n in counts.items() if n > 1)
        if twice:
            problems.append(f"cohort {cid}: {len(twice)} uid(s) pending in more than one batch "
                            f"(e.g. {', '.join(twice[:3])})")
    return problems


def _changelog(store: StateStore) -> list[str]:
    problems = []
    query = sa.select(changelog.c.id, changelog.c.cohort_id, changelog.c.count, changelog.c.uids)
    with store.engine.connect() as conn:
        for entry_id, cid, count, blob in conn.execution_options(stream_results=True, yield_per=200).execute(query):
            found = len(decode(blob))
            if blob and found != count:
                problems.append(f"changelog entry {entry_id} of {cid}: count {count} but {found} uids")
    return problems


def _refused(store: StateStore) -> list[str]:
    """Each refusal belongs to a cohort with a record, under its uid's digest."""
    with store.engine.connect() as conn:
        recorded = set(conn.execute(sa.select(cohorts.c.id)).scalars())
        rows = conn.execute(sa.select(refused.c.cohort_id, refused.c.uid, refused.c.digest)).all()
    problems = [f"refused uid {uid[:40]!r} of {cid}, which has no cohort record" for cid, uid, _ in rows
                if cid not in recorded]
    return problems + [f"refused uid {uid[:40]!r} of {cid}: its key is not its digest" for cid, uid, key in rows
                       if key != digest(uid)]
