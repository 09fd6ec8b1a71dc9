"""Run in .venv-airflow by tests/test_integrations.py, from a dags folder of its own: two DAGs through
`dag.test()` against the daemon at COHORTSYNC_URL (token COHORTSYNC_TOKEN), one syncing the cohort
COHORTSYNC_TEST_GOOD, one COHORTSYNC_TEST_BAD, and one that triggers the bad cohort and leaves the
outcome to the sensor; prints each DAG run's state and its tasks' as JSON.
The DAGs are module-level: Airflow 3's dag.test() parses this file from the dags folder."""
import json
import os
from datetime import datetime

from airflow import DAG

from reconciler.integrations.airflow import CohortSyncOperator, CohortSyncRunSensor


def dag_of(name: str, cohort: str, waited_first: bool = True) -> DAG:
    with DAG(name, start_date=datetime(2024, 1, 1), schedule=None, catchup=False) as dag:
        start = CohortSyncOperator(task_id="start", cohorts=[cohort], wait=False)
        sensor = CohortSyncRunSensor(task_id="sensor", run="{{ ti.xcom_pull(task_ids='start')['run'] }}",
                                     poke_interval=0.2, timeout=60, mode="poke")
        if waited_first:
            CohortSyncOperator(task_id="sync", cohorts=[cohort], timeout=60, poll_interval=0.2) >> start
        start >> sensor
    return dag


good = dag_of("cohortsync_good", os.environ.get("COHORTSYNC_TEST_GOOD", "good"))
bad = dag_of("cohortsync_bad", os.environ.get("COHORTSYNC_TEST_BAD", "bad"))
bad_sensor = dag_of("cohortsync_bad_sensor", os.environ.get("COHORTSYNC_TEST_BAD", "bad"), waited_first=False)


def main() -> None:
    from airflow.utils.db import initdb
    try:
        initdb(load_connections=False)  # Airflow 2
    except TypeError:
        initdb()  # Airflow 3
    result = {}
    for name, dag in (("good", good), ("bad", bad), ("bad_sensor", bad_sensor)):
        run = dag.test()
        result[name] = {"state": str(run.state), "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
