"""`cohortsync refused`: the uids MoEngage refused (or that can never be valid), kept and not sent again.

It reads the state only. A uid is tried again once its row in the source changes, or with
`cohortsync apply --retry-refused`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json

from reconciler.settings.config import load_settings
from reconciler.state.keys import sync_key
from reconciler.state.store import StateStore

EXIT_OK = 0


def refused(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    state = StateStore.open(settings.state_url)
    try:
        rows = [r.as_json() for r in state.refusals.listing()]
    finally:
        state.close()
    rows = [r for r in rows if (not args.cohort or r["cohort"] in args.cohort)
            and (not args.workspace or r["workspace"] in args.workspace)]
    if args.format == "json":
        print(json.dumps({"format_version": 1, "refused": [{**r, "since": _when(r["since"]), "at": _when(r["at"])}
                                                           for r in rows]}, indent=2))
    else:
        print(refused_text(rows))
    return EXIT_OK


def refused_text(rows: list[dict]) -> str:
    if not rows:
        return "No refused uids."
    width = max(len(_name(r)) for r in rows)
    lines = [f"{'cohort':<{width}}  {'since':<20}  {'action':<14}  uid: error"]
    lines += [f"{_name(r):<{width}}  {_when(r['since']):<20}  {r['action']:<14}  {r['uid']}: {r['error']}"
              for r in rows]
    lines.append(f"{len(rows):,} refused uid(s); they are sent again when their row in the source changes, "
                 "or with `cohortsync apply --retry-refused`")
    return "\n".join(lines)


def _name(row: dict) -> str:
    return sync_key(row["workspace"], row["cohort"])  # `workspace:cohort` outside the default workspace


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
