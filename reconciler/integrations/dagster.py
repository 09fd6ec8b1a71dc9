"""Dagster: `CohortSyncResource` (the daemon's URL and token), the op `cohortsync_op`, and `cohortsync_asset`,
an asset that syncs cohorts after the assets it depends on.

A run that does not converge raises `dagster.Failure` with the outcome, so the step fails and what
depends on it does not run. The token is best given as `EnvVar("COHORTSYNC_TOKEN")`.
"""
# no `from __future__ import annotations`: Dagster reads the annotations of ops and resources at run time

from collections.abc import Sequence
from typing import Any

from dagster import (AssetsDefinition, Config, ConfigurableResource, Failure, MaterializeResult, MetadataValue, asset,
                     op)

from reconciler.common.errors import CohortSyncError
from reconciler.daemon.triggering import RunOutcome, trigger


class CohortSyncResource(ConfigurableResource):
    """A cohortsync daemon: where it listens and its `daemon.token`."""

    url: str
    token: str
    timeout: float = 3600.0  # seconds to wait for a run's outcome; then it is `unknown`
    poll_interval: float = 1.0

    def sync(self, cohorts: Sequence[str] = ()) -> RunOutcome:
        """Trigger a reconcile of `cohorts` (all when empty), wait, and raise Failure unless all converged."""
        try:
            outcome = trigger(self.url, self.token, list(cohorts), wait_for=True, timeout=self.timeout,
                              poll=self.poll_interval)
        except CohortSyncError as exc:
            raise Failure(description=f"cohortsync: {exc}") from exc
        if not outcome.ok:
            raise Failure(description=f"cohortsync run did not converge:\n{outcome.text()}",
                          metadata=_metadata(outcome))
        return outcome


def _metadata(outcome: RunOutcome) -> dict[str, Any]:
    return {"run": outcome.run or "", "state": outcome.state, "adds": outcome.total("adds"),
            "removes": outcome.total("removes"), "unconfirmed": outcome.total("unconfirmed"),
            "refused": outcome.total("refused"), "cohorts": MetadataValue.json(outcome.cohorts)}


class CohortSyncConfig(Config):
    cohorts: list[str] = []  # empty: every cohort


@op
def cohortsync_op(config: CohortSyncConfig, cohortsync: CohortSyncResource) -> dict:
    """Sync the configured cohorts; the outcome as the op's output."""
    return cohortsync.sync(config.cohorts).as_json()


def cohortsync_asset(name: str, cohorts: Sequence[str], deps: Sequence[Any] = (), **kwargs: Any) -> AssetsDefinition:
    """An asset that syncs `cohorts` once `deps` (the models they read) are materialized; the resource is
    taken as `cohortsync`."""
    chosen = list(cohorts)

    @asset(name=name, deps=list(deps), **kwargs)
    def _sync(cohortsync: CohortSyncResource) -> MaterializeResult:
        return MaterializeResult(metadata=_metadata(cohortsync.sync(chosen)))

    return _sync
