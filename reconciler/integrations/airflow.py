"""Airflow: `CohortSyncOperator` triggers a reconcile and waits for it; `CohortSyncRunSensor` waits on a run id.

The daemon's URL and token come from the arguments, else from an Airflow connection (`conn_id`:
host is the URL, password the token), else from COHORTSYNC_URL and COHORTSYNC_TOKEN. A run that
does not converge fails the task (AirflowException with the outcome), so the DAG stops there.
The operator is not deferrable: waiting holds a worker slot. To free it, trigger with
`wait=False` and wait with the sensor in `mode="reschedule"`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from airflow.exceptions import AirflowException

try:  # Airflow 3: the task SDK
    from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator
except ImportError:  # Airflow 2
    from airflow.hooks.base import BaseHook
    from airflow.models import BaseOperator
    from airflow.sensors.base import BaseSensorOperator

from reconciler.common.errors import CohortSyncError
from reconciler.daemon.triggering import TERMINAL, RunOutcome, look, trigger


def _endpoint(url: str | None, token: str | None, conn_id: str | None) -> tuple[str, str]:
    if conn_id and not (url and token):
        conn = BaseHook.get_connection(conn_id)
        url = url or conn.host
        token = token or conn.password
    url = url or os.environ.get("COHORTSYNC_URL")
    token = token or os.environ.get("COHORTSYNC_TOKEN")
    if not url or not token:
        raise AirflowException("cohortsync: no daemon URL or token (arguments, conn_id, or COHORTSYNC_URL and "
                               "COHORTSYNC_TOKEN)")
    return url, token


def _failed(outcome: RunOutcome) -> AirflowException:
    return AirflowException(f"cohortsync run did not converge:\n{outcome.text()}")


class CohortSyncOperator(BaseOperator):
    """Trigger a reconcile of `cohorts` (all when empty) and, with `wait`, fail unless every one converged.
    Pushes the outcome (run id, state, counts per cohort) to XCom."""

    template_fields: Sequence[str] = ("cohorts",)
    ui_color = "#d8f0e0"

    def __init__(self, *, cohorts: Sequence[str] = (), url: str | None = None, token: str | None = None,
                 conn_id: str | None = None, wait: bool = True, timeout: float = 3600.0, poll_interval: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cohorts, self.url, self.token, self.conn_id = list(cohorts), url, token, conn_id
        self.wait, self.timeout, self.poll_interval = wait, timeout, poll_interval

    def execute(self, context: Any) -> dict:
        url, token = _endpoint(self.url, self.token, self.conn_id)
        try:
            outcome = trigger(url, token, self.cohorts, wait_for=self.wait, timeout=self.timeout, poll=self.poll_interval)
        except CohortSyncError as exc:
            raise AirflowException(f"cohortsync: {exc}") from exc
        self.log.info("%s", outcome.text())
        if self.wait and not outcome.ok:
            raise _failed(outcome)
        return outcome.as_json()


class CohortSyncRunSensor(BaseSensorOperator):
    """Wait for a run id (from CohortSyncOperator(wait=False)'s XCom: `run`) to end; fail unless it converged."""

    template_fields: Sequence[str] = ("run",)

    def __init__(self, *, run: str, url: str | None = None, token: str | None = None, conn_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run, self.url, self.token, self.conn_id = run, url, token, conn_id

    def poke(self, context: Any) -> bool:
        url, token = _endpoint(self.url, self.token, self.conn_id)
        try:
            outcome = look(url, token, self.run)
        except CohortSyncError as exc:  # the daemon restarts: ask again at the next poke
            self.log.warning("cohortsync: %s", exc)
            return False
        if outcome.state not in TERMINAL:
            return False
        self.log.info("%s", outcome.text())
        if not outcome.ok:
            raise _failed(outcome)
        return True
