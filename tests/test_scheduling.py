"""The daemon's scheduler (daemon/scheduling.py): urgent before routine, per workspace, one line per pass."""
from __future__ import annotations

import logging

from reconciler.daemon.scheduling import CHUNK, Scheduler
from reconciler.state.keys import split_key


def scheduler() -> Scheduler:
    return Scheduler(lane=lambda key: split_key(key)[0])


def test_urgent_work_goes_ahead_of_a_routine_backlog_and_yields_it():
    s = scheduler()
    s.put({f"c{i:03d}" for i in range(100)}, "timer")
    first = s.take(0)
    assert first.routine and len(first.keys) == CHUNK and not s.urgent.is_set()
    s.put({"vip"}, "http", git_pull=True)
    assert s.urgent.is_set()  # the routine chunk in hand stops starting cohorts
    s.requeue(first.keys[3:], first.reasons)
    s.done({k: "unchanged" for k in first.keys[:3]})
    urgent = s.take(0)
    assert urgent.keys == ["vip"] and not urgent.routine and urgent.git_pull and not s.urgent.is_set()
    s.done({"vip": "converged"})
    assert s.take(0).keys == sorted(first.keys[3:]) + ["c008", "c009", "c010"]  # set aside first, then the rest


def test_each_workspace_gets_its_own_chunk_at_its_best_priority():
    s = scheduler()
    s.put({"a1", "a2", "eu:b1"}, "timer")
    s.put({"eu:b2"}, "files")
    chunk = s.take(0)
    assert sorted(chunk.keys) == ["a1", "a2", "eu:b2"]  # default: routine; eu: its urgent key only
    assert not chunk.routine


def test_a_pass_logs_one_line_with_counts_when_its_last_cohort_is_done(caplog):
    s = scheduler()
    s.put({"a", "b", "c"}, "timer")
    chunk = s.take(0)
    with caplog.at_level(logging.INFO, logger="reconciler.daemon.scheduling"):
        s.done({"a": "unchanged", "b": "unchanged"})
        assert caplog.records == []
        s.drop({"c"}, "handed over")
    assert len(chunk.keys) == 3 and [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        "pass (timer) done: 3 cohort(s)"]
    assert caplog.records[0].getMessage().endswith(": 1 handed over, 2 unchanged")


def test_repeated_triggers_for_a_waiting_cohort_make_one_reconcile():
    s = scheduler()
    for reason in ("timer", "files", "http"):
        s.put({"beta"}, reason)
    chunk = s.take(0)
    assert chunk.keys == ["beta"] and chunk.reasons == {"timer", "files", "http"}
    assert s.take(0) is None
