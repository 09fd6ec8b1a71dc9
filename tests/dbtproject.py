"""Real dbt on the fixture project in tests/dbt/project, in the separate venv `make integrations-dbt` builds.

dbt-core and dbt-postgres are not cohortsync's dependencies (cohortsync reads dbt's JSON only), so
they live in `.venv-dbt`; tests that run dbt skip with the reason when it is absent, and fail
instead when COHORTSYNC_REQUIRE_INTEGRATIONS is set (CI sets it). `python -m tests.dbtproject`
regenerates the small artifacts committed beside the project (tests/dbt/*.json) for the unit tests.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "dbt" / "project"
FIXTURES = ROOT / "tests" / "dbt"
DBT = Path(os.environ.get("COHORTSYNC_DBT", ROOT / ".venv-dbt" / "bin" / "dbt"))
FIXTURE_SCHEMA = "dbt_fixture"


def require_dbt() -> Path:
    """The dbt executable, or a skip (a failure where integrations are mandatory)."""
    if DBT.is_file() and os.access(DBT, os.X_OK):
        return DBT
    reason = f"dbt not installed at {DBT}: run `make integrations-dbt`"
    if os.environ.get("COHORTSYNC_REQUIRE_INTEGRATIONS"):
        pytest.fail(f"{reason} (COHORTSYNC_REQUIRE_INTEGRATIONS is set)")
    pytest.skip(reason)


def dbt(workdir: Path, schema: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`dbt ARGS` on a copy of the fixture project in `workdir` (its target/ is workdir/project/target),
    building in PostgreSQL schema `schema`."""
    project = workdir / "project"
    if not project.exists():
        shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    env = {**os.environ, "DBT_SCHEMA": schema, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}
    done = subprocess.run([str(DBT), *args, "--project-dir", str(project), "--profiles-dir", str(project),
                           "--log-path", str(workdir / "logs")], env=env, capture_output=True, text=True, timeout=300)
    if check and done.returncode not in (0, 1):  # 1: a model failed (the fixture's `broken` does, on purpose)
        raise AssertionError(f"dbt {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def trimmed(manifest: dict) -> dict:
    """A real manifest without the parts cohortsync never reads (dbt's own macros are most of its bytes)."""
    return {**manifest, "macros": {}, "docs": {}, "parent_map": {}, "child_map": {}}


def refresh(workdir: Path) -> None:
    """Regenerate tests/dbt/manifest.json and run_results.json with the dbt in .venv-dbt."""
    dbt(workdir, FIXTURE_SCHEMA, "run")
    target = workdir / "project" / "target"
    manifest = json.loads((target / "manifest.json").read_text())
    (FIXTURES / "manifest.json").write_text(json.dumps(trimmed(manifest), indent=1, sort_keys=True) + "\n")
    shutil.copy(target / "run_results.json", FIXTURES / "run_results.json")
    print(f"wrote {FIXTURES}/manifest.json and run_results.json with dbt {manifest['metadata']['dbt_version']}")


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        refresh(Path(tmp))
    sys.exit(0)
