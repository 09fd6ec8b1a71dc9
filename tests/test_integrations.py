"""Airflow and Dagster against a real daemon and emulator, each with the real library in its own venv
(`make integrations` builds .venv-airflow and .venv-dagster): a converging sync passes, a failing one
fails the task. Skipped with the reason when a venv is absent, unless COHORTSYNC_REQUIRE_INTEGRATIONS=1."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemon_process import TOKEN, eventually
from tests.helpers import Repo

ROOT = Path(__file__).resolve().parents[1]
USERS = [f"user{i:03d}" for i in range(6)]
pytestmark = pytest.mark.xdist_group("integrations")  # each starts an orchestrator: not beside each other


def venv_python(name: str) -> Path:
    python = ROOT / f".venv-{name}" / "bin" / "python"
    if not python.exists():
        why = f"{name}: no .venv-{name} here (`make integrations` builds it)"
        if os.environ.get("COHORTSYNC_REQUIRE_INTEGRATIONS") == "1":
            pytest.fail(why + "; COHORTSYNC_REQUIRE_INTEGRATIONS=1 makes it mandatory")
        pytest.skip(why)
    return python


def run_script(python: Path, script: str, daemon_url: str, home: Path, *args: str) -> dict:
    """The script, copied alone into a folder (Airflow's dags folder: it parses every file there)."""
    folder = home / "dags"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "tests" / "integrations" / script, folder / script)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COHORTSYNC_URL": daemon_url, "COHORTSYNC_TOKEN": TOKEN,
           "COHORTSYNC_TEST_GOOD": args[0], "COHORTSYNC_TEST_BAD": args[1],
           "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "DAGSTER_HOME": str(home / "dagster")}
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(python), str(folder / script), *args], env=env,
                          capture_output=True, text=True, timeout=240, cwd=home)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (done.returncode, done.stdout[-3000:], done.stderr[-5000:])
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture
def synced(tmp_path, emulator, daemons):
    """A daemon with a cohort that converges (`good`) and one whose source is missing (`bad`)."""
    repo = Repo(tmp_path / "repo", base_url=emulator.url, daemon={"interval": "1h"})
    repo.file_cohort("good", USERS[:4])
    repo.file_cohort("bad", USERS[:2])
    daemon = daemons(repo, COHORTSYNC_DEBOUNCE="1h")
    eventually(lambda: emulator.members("bad") == USERS[:2])
    (repo.cohorts / "uids" / "bad.txt").unlink()  # from now on every run of `bad` fails
    repo.uids("good", USERS[:6])
    yield daemon
    assert daemon.stop() == 0


def test_airflow_operator_and_sensor_pass_on_converged_and_fail_the_task_on_failure(tmp_path, synced, emulator):
    python = venv_python("airflow")
    result = run_script(python, "airflow_dags.py", synced.url, tmp_path, "good", "bad")
    assert result["good"]["state"] == "success", result
    assert set(result["good"]["tasks"].values()) == {"success"}, result
    assert emulator.members("good") == USERS[:6]
    assert result["bad"]["state"] == "failed", result
    assert result["bad"]["tasks"]["sync"] == "failed", result
    assert result["bad_sensor"]["tasks"] == {"start": "success", "sensor": "failed"}, result  # the sensor fails too
    assert emulator.members("bad") == USERS[:2]  # a broken source removes nobody


def test_dagster_asset_and_op_pass_on_converged_and_fail_on_failure(tmp_path, synced, emulator):
    python = venv_python("dagster")
    result = run_script(python, "dagster_assets.py", synced.url, tmp_path, "good", "bad")
    assert result["good"] == {"success": True, "metadata": {"state": "converged", "adds": 2}}, result
    assert emulator.members("good") == USERS[:6]
    assert result["bad"]["success"] is False and result["op_bad"]["success"] is False, result
