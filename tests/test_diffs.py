"""The pure core: merge diff, ordering, guards and verdicts, table-driven."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.diffs import ADD, REMOVE, Tally, merge_diff
from reconciler.ordering import OutOfOrder, checked, external_sort
from reconciler.plans import BLOCKED, CHANGED, SUSPENDED, UNCHANGED, CohortPlan, guard_verdict, verdict
from reconciler.specs import MaxRemovals


@pytest.mark.parametrize(
    "desired, synced, expected",
    [
        ([], [], []),
        (["a", "b"], [], [(ADD, "a"), (ADD, "b")]),
        ([], ["a", "b"], [(REMOVE, "a"), (REMOVE, "b")]),
        (["a", "b", "c"], ["a", "b", "c"], []),
        (["a", "c", "e"], ["b", "c", "d"], [(ADD, "a"), (REMOVE, "b"), (REMOVE, "d"), (ADD, "e")]),
        (["B", "a"], ["a", "b"], [(ADD, "B"), (REMOVE, "b")]),
    ],
)
def test_merge_diff_table(desired, synced, expected):
    tally = Tally()
    assert list(merge_diff(desired, synced, tally)) == expected
    assert (tally.desired, tally.synced) == (len(desired), len(synced))


uid_sets = st.sets(st.text(min_size=1, max_size=8), max_size=200)


@given(uid_sets, uid_sets)
def test_merge_diff_equals_set_arithmetic(desired, synced):
    ops = list(merge_diff(sorted(desired), sorted(synced), Tally()))
    assert {u for op, u in ops if op == ADD} == desired - synced
    assert {u for op, u in ops if op == REMOVE} == synced - desired
    assert [u for _, u in ops] == sorted(u for _, u in ops)


def test_checked_drops_duplicates_and_refuses_a_step_back():
    assert list(checked(["a", "a", "b"])) == ["a", "b"]
    with pytest.raises(OutOfOrder):
        list(checked(["b", "a"]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6, alphabet=st.characters(blacklist_categories=["Cs", "Cc"])), max_size=300),
       st.integers(min_value=1, max_value=50))
def test_external_sort_equals_sorted_set(uids, run_size):
    assert list(external_sort(uids, run_size=run_size)) == sorted(set(uids))


@pytest.mark.parametrize(
    "allow_empty, max_removals, desired, synced, removes, blocked",
    [
        (False, None, 0, 10, 10, "no uids"),
        (True, None, 0, 10, 10, None),
        (False, None, 0, 0, 0, None),  # empty and nothing synced: fine
        (False, MaxRemovals(percent=50), 5, 10, 5, None),
        (False, MaxRemovals(percent=50), 4, 10, 6, "over max_removals 50%"),
        (False, MaxRemovals(count=3), 7, 10, 3, None),
        (False, MaxRemovals(count=3), 6, 10, 4, "over max_removals 3"),
        (False, MaxRemovals(count=0), 10, 10, 1, "over max_removals 0"),
    ],
)
def test_guards(allow_empty, max_removals, desired, synced, removes, blocked):
    reason = guard_verdict(allow_empty=allow_empty, max_removals=max_removals, desired=desired, synced=synced,
                           removes=removes)
    if blocked is None:
        assert reason is None
    else:
        assert blocked in reason


@pytest.mark.parametrize(
    "adds, removes, suspended, guard, force, status, forced",
    [
        (0, 0, False, None, False, UNCHANGED, False),
        (1, 0, False, None, False, CHANGED, False),
        (0, 1, False, "too many", False, BLOCKED, False),
        (0, 1, False, "too many", True, CHANGED, True),
        (1, 1, True, None, False, SUSPENDED, False),
        (1, 1, True, "too many", True, SUSPENDED, False),
    ],
)
def test_verdicts(adds, removes, suspended, guard, force, status, forced):
    plan = verdict(CohortPlan("c", ".c", UNCHANGED, adds=adds, removes=removes), suspended=suspended, guard=guard,
                   force=force)
    assert (plan.status, plan.forced) == (status, forced)
