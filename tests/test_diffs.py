"""The pure core: merge diff, ordering, guards and verdicts, table-driven."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.planning.diffs import Tally, merge_diff
from reconciler.sources.ordering import OutOfOrder, checked, external_sort, gnu_sort, gnu_sort_available, python_sort
from reconciler.planning.plans import BLOCKED, CHANGED, SUSPENDED, UNCHANGED, CohortPlan, guard_verdict, verdict
from reconciler.specs.cohorts import MaxRemovals


def chunked(uids: list[str], sizes: list[int]) -> list[list[str]]:
    """Cut a list into chunks of the given sizes (cycled), as sources and state deliver them."""
    out, i, k = [], 0, 0
    while i < len(uids):
        size = sizes[k % len(sizes)] if sizes else len(uids)
        out.append(uids[i:i + size])
        i, k = i + size, k + 1
    return out


def diff(desired: list[str], synced: list[str], d_sizes=(), s_sizes=()) -> tuple[list[str], list[str], Tally]:
    tally = Tally()
    adds, removes = [], []
    for a, r in merge_diff(chunked(desired, list(d_sizes)), chunked(synced, list(s_sizes)), tally):
        adds += a
        removes += r
    return adds, removes, tally


@pytest.mark.parametrize(
    "desired, synced, adds, removes",
    [
        ([], [], [], []),
        (["a", "b"], [], ["a", "b"], []),
        ([], ["a", "b"], [], ["a", "b"]),
        (["a", "b", "c"], ["a", "b", "c"], [], []),
        (["a", "c", "e"], ["b", "c", "d"], ["a", "e"], ["b", "d"]),
        (["B", "a"], ["a", "b"], ["B"], ["b"]),
    ],
)
@pytest.mark.parametrize("sizes", [(), (1,), (2, 1)])
def test_merge_diff_table(desired, synced, adds, removes, sizes):
    got_adds, got_removes, tally = diff(desired, synced, sizes, sizes[::-1])
    assert (got_adds, got_removes) == (adds, removes)
    assert (tally.desired, tally.synced) == (len(desired), len(synced))


uid_sets = st.sets(st.text(min_size=1, max_size=8), max_size=200)
sizes = st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=5)


@given(uid_sets, uid_sets, sizes, sizes)
def test_merge_diff_equals_set_arithmetic_whatever_the_chunking(desired, synced, d_sizes, s_sizes):
    adds, removes, tally = diff(sorted(desired), sorted(synced), d_sizes, s_sizes)
    assert adds == sorted(desired - synced)
    assert removes == sorted(synced - desired)
    assert (tally.desired, tally.synced) == (len(desired), len(synced))


def test_checked_drops_duplicates_within_and_across_chunks_and_refuses_a_step_back():
    assert list(checked([["a", "a", "b"], ["b", "b", "c"], ["c"]])) == [["a", "b"], ["c"]]
    with pytest.raises(OutOfOrder):
        list(checked([["b", "a"]]))
    with pytest.raises(OutOfOrder):
        list(checked([["b"], ["a"]]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6, alphabet=st.characters(blacklist_categories=["Cs", "Cc"])), max_size=300),
       st.integers(min_value=1, max_value=50), sizes)
def test_external_sort_equals_sorted_set(uids, run_size, chunk_sizes):
    out = [u for chunk in python_sort(chunked(uids, chunk_sizes), run_size=run_size) for u in chunk]
    assert out == sorted(set(uids))
    if gnu_sort_available():
        assert [u for chunk in gnu_sort(chunked(uids, chunk_sizes)) for u in chunk] == sorted(set(uids))


def test_external_sort_of_many_uids_in_code_point_order():
    import random
    rng = random.Random(3)
    uids = [rng.choice(["", "é", "Z", "a", "中", "😀", "-"]) + f"{rng.randrange(10**6)}" for _ in range(200_000)]
    assert [u for chunk in external_sort(chunked(uids, [30_000])) for u in chunk] == sorted(set(uids))


def test_a_failing_source_fails_the_sort():
    def broken():
        yield ["b", "a"]
        raise ValueError("source broke")
    with pytest.raises(ValueError, match="source broke"):
        list(external_sort(broken()))


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
