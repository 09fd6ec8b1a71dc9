"""Run in .venv-dagster by tests/test_integrations.py: an asset and an op job through `materialize` and
`execute_in_process` against the daemon at COHORTSYNC_URL; prints what succeeded as JSON."""
import json
import os
import sys

from dagster import asset, job, materialize

from reconciler.integrations.dagster import CohortSyncResource, cohortsync_asset, cohortsync_op


@asset
def model() -> None:
    """Stands for the warehouse model the cohort reads."""


def main() -> None:
    resource = CohortSyncResource(url=os.environ["COHORTSYNC_URL"], token=os.environ["COHORTSYNC_TOKEN"],
                                  timeout=60, poll_interval=0.2)
    good, bad = sys.argv[1:3]
    result = {}
    for name, cohort in (("good", good), ("bad", bad)):
        done = materialize([model, cohortsync_asset(f"sync_{name}", [cohort], deps=[model])],
                           resources={"cohortsync": resource}, raise_on_error=False)
        meta = {}
        for event in done.get_asset_materialization_events():
            meta = {k: v.value for k, v in event.materialization.metadata.items() if k in ("state", "adds")}
        result[name] = {"success": done.success, "metadata": meta}

    @job
    def sync_job() -> None:
        cohortsync_op()

    ran = sync_job.execute_in_process(resources={"cohortsync": resource}, raise_on_error=False,
                                      run_config={"ops": {"cohortsync_op": {"config": {"cohorts": [bad]}}}})
    result["op_bad"] = {"success": ran.success}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
