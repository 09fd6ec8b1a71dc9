"""Resync: the pure four-way split (table-driven), then against the emulator: segments edited by hand come back."""
from __future__ import annotations

import dataclasses
import json

import pytest

from reconciler.daemon.upkeep import Upkeep
from reconciler.planning.diffs import Tally
from reconciler.planning.resync import resync_diff
from reconciler.settings.model import Settings
from reconciler.specs.cohorts import CohortSpec, SourceSpec, SpecSet
from reconciler.state.records import RunRecord
from reconciler.state.store import StateStore
from tests.helpers import Repo


def split(desired: list[str], synced: list[str], leavers: list[str], chunk: int = 2) -> tuple[list[str], ...]:
    def chunks(uids: list[str]) -> list[list[str]]:
        return [uids[i:i + chunk] for i in range(0, len(uids), chunk)]
    out: tuple[list[str], ...] = ([], [], [], [])
    tally = Tally()
    for part in resync_diff(chunks(desired), chunks(synced), chunks(leavers), tally):
        for into, uids in zip(out, (part.adds, part.re_adds, part.removes, part.re_removes)):
            into.extend(uids)
    assert (tally.desired, tally.synced) == (len(desired), len(synced))
    return out


@pytest.mark.parametrize("desired, synced, leavers, adds, re_adds, removes, re_removes", [
    ([], [], [], [], [], [], []),
    (["a", "b"], ["a", "b"], [], [], ["a", "b"], [], []),  # every member re-sent
    (["a", "c"], ["a", "b"], [], ["c"], ["a"], ["b"], []),  # the usual diff beside the re-adds
    (["a"], ["a"], ["x", "y"], [], ["a"], [], ["x", "y"]),  # leavers not desired: removed again
    (["a", "x"], ["a"], ["x"], ["x"], ["a"], [], []),  # a leaver desired again is an add, not a removal
    (["a"], ["a", "b"], ["b"], [], ["a"], ["b"], []),  # a leaver that is a member now: one ordinary remove
    ([], ["a"], ["0", "z"], [], [], ["a"], ["0", "z"]),  # leavers before and after every member
    (["b", "d", "f", "h"], ["c", "d", "e"], ["a", "c", "g", "i"], ["b", "f", "h"], ["d"], ["c", "e"], ["a", "g", "i"]),
])
def test_resync_splits_every_uid_into_one_class(desired, synced, leavers, adds, re_adds, removes, re_removes):
    for chunk in (1, 2, 100):
        assert split(desired, synced, leavers, chunk) == (adds, re_adds, removes, re_removes)


def test_hand_deleted_members_come_back_and_a_stray_that_left_is_removed(repo: Repo, emulator, capsys):
    users = [f"u{i:03d}" for i in range(100)]
    repo.file_cohort("beta", users[:60], guards={"max_removals": 5})
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", users[10:60])  # u000..u009 leave
    assert repo.run(capsys, "apply", "--force")[0] == 0
    emulator.edit("beta", remove=users[20:30], add=["u005", "stranger"])  # the dashboard: drift both ways
    code, out, _ = repo.run(capsys, "plan", "--resync", "--format", "json", "--force")
    plan = json.loads(out)["cohorts"][0]
    assert code == 0 and plan["resync"] and (plan["adds"], plan["removes"]) == (50, 10)  # every leaver, u005 too
    code, out, _ = repo.run(capsys, "apply", "--resync")
    assert code == 1 and "blocked" in out and "max_removals" in out  # guards apply to a resync too
    assert repo.run(capsys, "apply", "--resync", "--force")[0] == 0
    assert emulator.members("beta") == sorted(users[10:60] + ["stranger"])  # a uid it never sent stays
    assert repo.run(capsys, "plan", "--detailed-exitcode")[0] == 0



def test_resyncs_fall_due_from_the_last_resync_run_or_the_start(tmp_path):
    state = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    specs = SpecSet({"a": CohortSpec("a", ".a", SourceSpec("file"), "a.yaml", resync=100),
                     "b": CohortSpec("b", ".b", SourceSpec("file"), "b.yaml")}, [], {})
    settings = Settings()
    upkeep = Upkeep(state, started=1000)
    assert upkeep.resyncs_due(settings, specs, 1050) == set()
    assert upkeep.resyncs_due(settings, specs, 1100) == {"a"}
    assert upkeep.resyncs_due(settings, specs, 1150) == set()  # asked for at 1100: no run yet, no repeat
    state.record_run(RunRecord("r1", "a", "converged", 1190, "resync"))
    assert upkeep.resyncs_due(settings, specs, 1250) == set()
    assert upkeep.resyncs_due(settings, specs, 1291) == {"a"}
    every = dataclasses.replace(settings, daemon=dataclasses.replace(settings.daemon, resync=500.0))
    assert upkeep.resyncs_due(every, specs, 1350) == set()
    assert upkeep.resyncs_due(every, specs, 1500) == {"a", "b"}  # b by the config's default, a by its own
    state.close()
