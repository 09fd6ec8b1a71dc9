"""Over many seeded random rounds, the emulator's segments equal the desired sets after every apply."""
from __future__ import annotations

import dataclasses
import shutil

from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from reconciler.moengage.client import MoEngageClient
from reconciler.settings.config import load_settings
from reconciler.running.reconciling import Reconciler
from reconciler.state.store import StateStore
from tests.conftest import API_KEY, WORKSPACE
from tests.helpers import Repo

POOL = [f"u{i:03d}" for i in range(60)] + ["é-1", "中文", "Zed", "a b"]
COHORTS = ["alpha", "beta", "gamma"]


def test_random_rounds_converge(tmp_path, emulator):
    class Rounds(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            emulator.post("/_emulator/reset")
            root = tmp_path / "repo"
            shutil.rmtree(root, ignore_errors=True)
            self.repo = Repo(root, base_url=emulator.url, moengage={"max_payload_bytes": 1200})
            env = {"TEST_WS": WORKSPACE, "TEST_KEY": API_KEY}
            self.settings = load_settings(str(self.repo.config), env=env)
            self.desired: dict[str, set[str]] = {}
            self.ever: dict[str, set[str]] = {}
            self.modes: dict[str, str] = {}
            self.applied = False

        @rule(cohort=st.sampled_from(COHORTS), members=st.sets(st.sampled_from(POOL), max_size=40),
              mode=st.sampled_from(["mirror", "mirror", "add_only"]))
        def set_members(self, cohort: str, members: set[str], mode: str) -> None:
            self.repo.file_cohort(cohort, sorted(members), mode=self.modes.setdefault(cohort, mode),
                                  guards={"allow_empty": True})
            self.desired[cohort] = set(members)
            self.applied = False

        @rule()
        def apply(self) -> None:
            state = StateStore.open(self.settings.state_url)
            client = MoEngageClient(dataclasses.replace(self.settings.moengage, backoff_base=0.01))
            reconciler = Reconciler(self.settings, state, clients={"default": client})
            try:
                report = reconciler.apply(reconciler.load())
            finally:
                reconciler.close()
                client.close()
                state.close()
            assert report.ok, [(o.plan.id, o.result, o.error) for o in report.outcomes]
            for cohort, members in self.desired.items():
                self.ever.setdefault(cohort, set()).update(members)
            self.applied = True

        @invariant()
        def segments_match(self) -> None:
            if not getattr(self, "applied", False):
                return
            for cohort, members in self.desired.items():
                got = set(emulator.members(cohort))
                if self.modes[cohort] == "mirror":
                    assert got == members, cohort
                else:
                    assert members <= got <= self.ever[cohort], cohort

    run_state_machine_as_test(Rounds, settings=hsettings(max_examples=25, stateful_step_count=12, deadline=None))
