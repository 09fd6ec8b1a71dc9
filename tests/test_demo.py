"""`cohortsync demo` from a copy of the repository, as a newcomer runs it: twice."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_applies_the_examples_then_has_nothing_to_change(tmp_path):
    shutil.copytree(ROOT / "cohorts", tmp_path / "cohorts")
    shutil.copy(ROOT / "cohortsync.yaml", tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    first = subprocess.run([sys.executable, "-m", "reconciler", "demo"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "All cohorts converged." in first.stdout
    for cohort in ("high_value_buyers", "repeat_buyers", "beta_testers", "newsletter_optin"):
        assert cohort in first.stdout.split("== segments in the emulator")[1]
    second = subprocess.run([sys.executable, "-m", "reconciler", "demo"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "No changes. MoEngage matches the specs." in second.stdout
    assert (tmp_path / "state" / "emulator.db").exists() and (tmp_path / "state" / "cohortsync.db").exists()
