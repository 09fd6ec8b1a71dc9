"""Run in .venv-airflow by tests/test_integrations.py: two DAGs through `dag.test()` against the daemon at
COHORTSYNC_URL (token COHORTSYNC_TOKEN); prints each DAG run's state and its tasks' states as JSON."""
import json
import os
import sys
from datetime import datetime

from airflow import DAG
from airflow.utils.db import initdb

from reconciler.integrations.airflow import CohortSyncOperator, CohortSyncRunSensor


def dag_of(name: str, cohort: str) -> DAG:
    with DAG(name, start_date=datetime(2024, 1, 1), schedule=None, catchup=False) as dag:
        waited = CohortSyncOperator(task_id="sync", cohorts=[cohort], timeout=60, poll_interval=0.2)
        start = CohortSyncOperator(task_id="start", cohorts=[cohort], wait=False)
        sensor = CohortSyncRunSensor(task_id="sensor", run="{{ ti.xcom_pull(task_ids='start')['run'] }}",
                                     poke_interval=0.2, timeout=60, mode="poke")
        waited >> start >> sensor
    return dag


def main() -> None:
    initdb(load_connections=False)
    result = {}
    for name, cohort in zip(("good", "bad"), sys.argv[1:3]):
        run = dag_of(f"cohortsync_{name}", cohort).test()
        result[name] = {"state": str(run.state), "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    main()
