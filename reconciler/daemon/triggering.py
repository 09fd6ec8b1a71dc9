"""`cohortsync trigger`: ask a running daemon to reconcile now (what CI calls after a merge)."""
from __future__ import annotations

import argparse
import json
import os

import requests

from reconciler.settings.config import load_settings
from reconciler.common.errors import CohortSyncError


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    url = (args.url or os.environ.get("COHORTSYNC_URL") or f"http://{settings.daemon.listen}").rstrip("/")
    token = settings.daemon.token.reveal()
    if not token:
        raise CohortSyncError("no token: set COHORTSYNC_TOKEN to the daemon's daemon.token")
    try:
        resp = requests.post(f"{url}/reconcile", params=[("cohort", c) for c in args.cohort],
                             headers={"Authorization": f"Bearer {token}"}, timeout=args.timeout)
    except requests.RequestException as exc:
        raise CohortSyncError(f"cannot reach the daemon at {url}: {type(exc).__name__}") from exc
    if resp.status_code != 202:
        raise CohortSyncError(f"the daemon at {url} answered {resp.status_code}: {resp.text[:200]}")
    body = resp.json()
    print(f"accepted: {json.dumps(body.get('cohorts'))} will be reconciled")
    return 0
