"""The cohort-name rule is a setting (MoEngage's own docs disagree): specs, the emulator and the client hold it alike.

Parentheses are only a warning: a partner's docs say MoEngage refuses them, MoEngage's own do not.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reconciler.common.errors import CohortApiError
from reconciler.moengage.client import MoEngageClient
from reconciler.settings.model import MoEngageSettings, Secret
from reconciler.specs.rules import LEADING_PERIOD, NO_LEADING_PERIOD
from tests.conftest import API_KEY, WORKSPACE
from tests.helpers import Repo
from tests.test_client import send_all
from tests.test_emulator import assert_error_shape, body, post


@pytest.fixture
def repo(tmp_path) -> Repo:
    r = Repo(tmp_path)
    r.file_cohort("dotted", ["u1"])  # name: .dotted
    return r


def use_rule(repo: Repo, rule: str) -> None:
    text = repo.config.read_text().replace("moengage:\n", f"moengage:\n  name_rule: {rule}\n", 1)
    repo.config.write_text(text)


def test_the_default_rule_wants_the_leading_period(repo, capsys):
    repo.spec("bare.yaml", "id: bare\nname: Bare name\nsource: {file: uids/dotted.txt}\n")
    code, _, err = repo.run(capsys, "validate")
    assert code == 1
    assert "bare.yaml:2: name: 'Bare nam'… must start with '.'" in err
    assert "moengage.name_rule: leading_period" in err and "set moengage.name_rule: no_leading_period" in err
    assert "COHORTSYNC_NAME_RULE" in err


def test_no_leading_period_refuses_the_period_and_says_how_to_switch_back(repo, capsys):
    use_rule(repo, NO_LEADING_PERIOD)
    repo.spec("bare.yaml", "id: bare\nname: Bare name\nsource: {file: uids/dotted.txt}\n")
    code, _, err = repo.run(capsys, "validate")
    assert code == 1
    assert "dotted.yaml:2: name: '.dotted' must not start with '.'" in err
    assert "set moengage.name_rule: leading_period" in err and "bare.yaml" not in err


def test_the_rule_comes_from_the_environment_too(repo, capsys, monkeypatch):
    monkeypatch.setenv("COHORTSYNC_NAME_RULE", NO_LEADING_PERIOD)
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "must not start with '.'" in err


def test_each_workspace_has_its_own_rule(tmp_path, capsys):
    """The same spec may suit one workspace's rule and not another's: the error names the workspace's key."""
    repo = Repo(tmp_path, workspaces={"live": {"name_rule": NO_LEADING_PERIOD}})
    repo.file_cohort("both", ["u1"], workspaces=["default", "live"])
    repo.file_cohort("bare", ["u1"], workspaces=["live"])
    (repo.cohorts / "bare.yaml").write_text((repo.cohorts / "bare.yaml").read_text().replace("name: .bare", "name: bare"))
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "bare.yaml" not in err
    assert "both.yaml:" in err and "'.both' must not start with '.'" in err
    assert "workspaces.live.name_rule: no_leading_period" in err and "set workspaces.live.name_rule: leading_period" in err
    assert "COHORTSYNC_NAME_RULE" not in err and "moengage.name_rule" not in err


def test_an_unknown_rule_is_a_config_error(repo, capsys):
    use_rule(repo, "sometimes")
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "cohortsync.yaml: moengage.name_rule:" in err and "leading_period" in err


def test_a_schema_error_and_the_rule_are_reported_in_one_run(repo, capsys):
    repo.spec("two.yaml", "id: two\nname: Bare\nsource: {file: uids/dotted.txt}\ncolour: red\n")
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "two.yaml:2: name:" in err and "two.yaml:4: colour:" in err


def test_plan_shows_a_cohort_against_the_rule_as_error_and_keeps_its_members(repo, capsys):
    repo.spec("bare.yaml", "id: bare\nname: Bare name\nsource: {file: uids/dotted.txt}\n")
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    assert code == 1
    plans = {p["id"]: p for p in json.loads(out)["cohorts"]}
    assert plans["bare"]["status"] == "error" and "must start with '.'" in plans["bare"]["reason"]
    assert plans["dotted"]["status"] == "changed"


def test_parentheses_warn_but_validate_passes(repo, capsys):
    repo.spec("paren.yaml", "id: paren\nname: .Buyers (90 days)\nsource: {file: uids/dotted.txt}\n")
    code, out, err = repo.run(capsys, "validate")
    assert code == 0 and "2 cohort spec(s) valid" in out
    assert "paren.yaml: name: warning: '.Buyers '… has parentheses" in err
    assert "dotted.yaml" not in err


def test_the_example_cohorts_need_no_parentheses():
    names = [yaml.safe_load(p.read_text())["name"] for p in (Path(__file__).parent.parent / "cohorts").glob("*.yaml")]
    assert names and not [n for n in names if "(" in n or ")" in n]


# --- the emulator, with the same flag -----------------------------------------------------------------

@pytest.mark.parametrize("rule, good, bad", [(LEADING_PERIOD, ".Named", "Named"), (NO_LEADING_PERIOD, "Named", ".Named")])
def test_the_emulator_enforces_the_rule_it_is_given(start_emulator, rule, good, bad):
    emu = start_emulator("--name-rule", rule)
    assert post(emu, body(name=good)).status_code == 200
    error = assert_error_shape(post(emu, body(name=bad, cohort_id="other")), 400, "parameters.cohort_name")
    assert rule in error["message"]
    assert_error_shape(post(emu, body(name=f"{good}|pipe", cohort_id="third")), 400, "parameters.cohort_name")
    assert list(emu.segments()) == ["beta"]


def test_the_emulators_rule_can_change_while_it_runs(start_emulator):
    emu = start_emulator()
    emu.configure(name_rule=NO_LEADING_PERIOD)
    assert post(emu, body(name="No period")).status_code == 200


# --- the client: a 400 on cohort_name says which rule is configured and how to switch ------------------

@pytest.mark.parametrize("configured, server", [(LEADING_PERIOD, NO_LEADING_PERIOD), (NO_LEADING_PERIOD, LEADING_PERIOD)])
def test_a_400_on_the_name_says_the_configured_rule_and_how_to_switch(start_emulator, configured, server):
    emu = start_emulator("--name-rule", server)
    settings = MoEngageSettings(workspace_id=WORKSPACE, api_key=Secret(API_KEY), base_url=emu.url,
                                name_rule=configured)
    name = ".Named" if configured == LEADING_PERIOD else "Named"
    with MoEngageClient(settings) as client, pytest.raises(CohortApiError) as info:
        send_all(client, "c1", ["a"], name=name)
    text = str(info.value)
    assert info.value.status == 400 and f"moengage.name_rule: {configured}" in text
    assert f"set moengage.name_rule: {server}" in text and len(emu.requests()) == 1


def test_a_named_workspaces_400_names_its_own_setting(start_emulator):
    emu = start_emulator("--name-rule", NO_LEADING_PERIOD)
    settings = MoEngageSettings(workspace_id=WORKSPACE, api_key=Secret(API_KEY), base_url=emu.url)
    with MoEngageClient(settings, workspace="live") as client, pytest.raises(CohortApiError) as info:
        send_all(client, "c1", ["a"], name=".Named")
    text = str(info.value)
    assert "set workspaces.live.name_rule: no_leading_period" in text and "COHORTSYNC_NAME_RULE" not in text
