"""`cohortsync demo`: from an empty folder with the packaged examples, and on the repository (`make demo`)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from reconciler.cli.demo import prepare

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("high_value_buyers", "repeat_buyers", "beta_testers", "newsletter_optin")


def demo(cwd: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    done = subprocess.run([sys.executable, "-m", "reconciler", "demo", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_demo_in_an_empty_folder_applies_the_examples_then_has_nothing_to_change(tmp_path):
    first = demo(tmp_path)
    assert "All cohorts converged." in first
    for cohort in EXAMPLES:
        assert cohort in first.split("== segments in the emulator")[1]
    workspace = tmp_path / "cohortsync-demo"
    assert (workspace / "state" / "emulator.db").exists() and (workspace / "state" / "cohortsync.db").exists()
    assert (workspace / "schema" / "cohort.schema.json").exists()  # the specs' $schema line resolves
    second = demo(tmp_path, "--dir", "cohortsync-demo")
    assert "No changes. MoEngage matches the specs." in second
    assert "cohortsync demo --dir cohortsync-demo` again" in second


def test_make_demo_runs_on_the_repository_itself(tmp_path):
    """`make demo` is `cohortsync demo --dir .` in a clone: its cohorts/, cohortsync.yaml and state/."""
    shutil.copytree(ROOT / "cohorts", tmp_path / "cohorts")
    shutil.copy(ROOT / "cohortsync.yaml", tmp_path)
    (tmp_path / "cohorts" / "beta_testers.yaml").unlink()  # the repository's own specs, not the packaged ones
    out = demo(tmp_path, "--dir", ".")
    assert "All cohorts converged." in out and "beta_testers" not in out
    assert (tmp_path / "state" / "emulator.db").exists() and (tmp_path / "state" / "cohortsync.db").exists()
    assert not (tmp_path / "cohortsync-demo").exists()


def test_the_demo_fills_in_only_what_is_missing(tmp_path):
    prepare(tmp_path)
    (tmp_path / "cohorts" / "beta_testers.yaml").unlink()
    (tmp_path / "cohortsync.yaml").write_text("cohorts_dir: cohorts\n")
    prepare(tmp_path)
    assert not (tmp_path / "cohorts" / "beta_testers.yaml").exists()  # a spec deleted there stays deleted
    assert (tmp_path / "cohortsync.yaml").read_text() == "cohorts_dir: cohorts\n"
    assert sorted(p.name for p in (tmp_path / "schema").iterdir()) == ["cohort.schema.json", "config.schema.json"]
