"""Per-cohort leases, fencing and the shared rate budget on PostgreSQL (state/leases.py, fencing.py, budget.py)."""
from __future__ import annotations

import threading
import time

import pytest

from reconciler.common.errors import LeaseHeld, LeaseLost
from reconciler.settings.model import RateLimit
from reconciler.state.budget import SharedBudget
from reconciler.state.cohortleases import CohortLeases
from reconciler.state.leases import Lease
from reconciler.state.store import StateStore
from reconciler.state.records import Cohort, Ending

pytestmark = pytest.mark.postgres  # but the last test: SQLite


@pytest.fixture
def pg(postgres_schema: str):
    store = StateStore.open(postgres_schema)
    yield store
    store.close()


def test_replicas_claim_disjoint_shares_and_an_expired_lease_moves_with_a_new_token(pg):
    a, b = CohortLeases(pg, "run", ttl=1.0), CohortLeases(pg, "run", ttl=5.0)
    keys = {f"c{i}" for i in range(10)}
    got_a = set(a.claim(keys, 6))
    got_b = set(b.claim(keys, 10))
    assert len(got_a) == 6 and got_b == keys - got_a
    token = a.fence(sorted(got_a)[0]).token
    time.sleep(1.1)  # a stops renewing: by the database's clock its leases expire
    taken = set(b.claim(keys, 10))
    assert taken == got_a and b.fence(sorted(got_a)[0]).token == token + 1
    assert set(a.renew()) == got_a and a.held() == set()


def test_a_write_under_a_lost_lease_raises_and_writes_nothing(pg):
    a, b = CohortLeases(pg, "run", ttl=0.5), CohortLeases(pg, "run", ttl=5.0)
    a.claim({"beta"}, 1)
    fence = a.fence("beta")
    batch = pg.begin_batch(Cohort("beta", ".beta", None), "add_members", ["u1", "u2"], fence=fence)
    time.sleep(0.6)
    assert b.claim({"beta"}, 1) == ["beta"]
    with pytest.raises(LeaseLost):
        pg.settle_batch(batch, "beta", "add_members", ["u1", "u2"], fence=fence)
    with pytest.raises(LeaseLost):
        pg.record_outcome(Cohort("beta", ".beta", None), Ending(status="converged", converged=True), fence=fence)
    assert pg.count_members("beta") == 0 and pg.cohort("beta").unconfirmed == 2  # left for the new holder
    pg.settle_batch(batch, "beta", "add_members", ["u1", "u2"], fence=b.fence("beta"))
    assert pg.count_members("beta") == 2


def test_an_expired_lease_nobody_took_fences_writes_until_renewed(pg):
    a = CohortLeases(pg, "run", ttl=0.3)
    a.claim({"beta"}, 1)
    time.sleep(0.4)
    with pytest.raises(LeaseLost):
        pg.record_outcome(Cohort("beta", ".beta", None), Ending(status="converged"), fence=a.fence("beta"))
    assert a.renew() == [] and a.held() == {"beta"}  # nobody wrote meanwhile: the same token goes on
    pg.record_outcome(Cohort("beta", ".beta", None), Ending(status="converged"), fence=a.fence("beta"))
    with pytest.raises(LeaseLost):
        time.sleep(0.3)
        a.fence("beta").check_local()  # the holder's own clock stops it sending before the database would


def test_a_started_reconcile_keeps_its_fence_after_the_lease_is_lost(pg):
    """The cause of the replicas-under-pauses drift: once a paused holder's renew found its lease
    gone, the fence of its running reconcile was forgotten and its later writes went unfenced. The
    fence stays pinned to the reconcile: its writes fail on the token, its sends on the deadline."""
    a, b = CohortLeases(pg, "run", ttl=0.5), CohortLeases(pg, "run", ttl=5.0)
    a.claim({"beta"}, 1)
    assert a.start("beta")
    time.sleep(0.6)  # paused past its lease
    assert b.claim({"beta"}, 1) == ["beta"] and a.renew() == ["beta"]
    fence = a.fence("beta")
    assert fence.token == b.fence("beta").token - 1
    with pytest.raises(LeaseLost):
        fence.check_local()
    with pytest.raises(LeaseLost):
        pg.begin_batch(Cohort("beta", ".beta", None), "add_members", ["u1"], fence=fence)
    with pytest.raises(LeaseLost):
        pg.record_outcome(Cohort("beta", ".beta", None), Ending(status="converged"), fence=a.fence("never-held"))
    a.finish("beta")
    assert pg.cohort("beta") is None or pg.cohort("beta").unconfirmed == 0


def test_a_lease_found_lost_is_not_renewed_behind_its_holders_back(pg):
    """Found by the replica machine with the diff in the warehouse: a holder paused past its lease, whose
    own clock then found the lease lost, renewed the row all the same (it still named it), so no other
    replica could take the cohort while this one no longer reconciled it, for as long as it lived."""
    a, b = CohortLeases(pg, "run", ttl=0.5), CohortLeases(pg, "run", ttl=5.0)
    a.claim({"beta", "vip"}, 2)
    time.sleep(0.6)  # paused past its lease; nobody took it meanwhile
    fence = a.fence("beta")
    with pytest.raises(LeaseLost) as lost:
        fence.check_local()  # its reconcile resumes and finds the lease lost, as the applier does
    fence.lost(str(lost.value))
    assert a.held() == {"vip"}
    assert a.renew() == [] and a.held() == {"vip"}  # its other lease goes on
    assert b.claim({"beta", "vip"}, 2) == ["beta"], "the cohort a no longer reconciles goes to another replica"


def test_balancing_never_gives_back_a_cohort_whose_reconcile_has_started(pg):
    a = CohortLeases(pg, "run", ttl=5.0)
    a.claim({"beta", "vip"}, 2)
    assert a.start("beta")
    assert a.release({"beta", "vip"}) == ["vip"] and a.held() == {"beta"}
    a.finish("beta")
    assert a.release({"beta"}) == ["beta"] and a.held() == set()
    with pytest.raises(LeaseLost):
        a.fence("beta").check_local()  # a lease given back sends nothing more


def test_apply_takes_an_idle_lease_and_names_the_holder_of_a_busy_one(pg):
    replica, apply = CohortLeases(pg, "run", ttl=5.0), CohortLeases(pg, "apply", ttl=5.0)
    replica.claim({"idle", "busy"}, 2)
    assert replica.start("busy")
    apply.take({"idle"}, wait=0)
    assert apply.held() == {"idle"} and replica.renew() == ["idle"]
    with pytest.raises(LeaseHeld, match=replica.id):
        apply.take({"busy"}, wait=0.3)
    replica.finish("busy")
    apply.take({"busy"}, wait=0)


def test_triggers_reach_the_holder_through_its_lease_row(pg):
    a, b = CohortLeases(pg, "run", ttl=5.0), CohortLeases(pg, "run", ttl=5.0)
    a.claim({"beta", "eu:beta", "vip"}, 3)
    b.ask(set(), ["beta"], "http")
    assert a.asked() == {"beta": "http", "eu:beta": "http"} and a.asked() == {}
    b.ask(set(), [], "github")
    assert set(a.asked()) == {"beta", "eu:beta", "vip"}


def test_the_shared_budget_never_allows_more_than_n_requests_a_window(pg):
    """Three holders of one account's budget: every request's window (from when it left, back one
    window) holds at most N requests answered or in flight, and the rate is used."""
    limit, spans, lock = RateLimit(5, 1.0), [], threading.Lock()

    def sender() -> None:
        budget = SharedBudget(pg, "acct", limit)
        for _ in range(7):
            with budget.slot():
                left = time.time()
                time.sleep(0.01)
            with lock:
                spans.append((left, time.time()))

    threads = [threading.Thread(target=sender) for _ in range(3)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for left, _ in spans:
        assert sum(1 for other_left, answered in spans if other_left <= left and answered > left - 1.0) <= 5
    assert time.time() - started < 4 * 1.0 + 1.5  # 21 requests at 5 a second: four windows and the last burst
    assert SharedBudget(pg, "acct", limit).in_use() <= 5


def test_sqlite_keeps_one_writer_and_says_so_to_a_second_run(tmp_path):
    store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    Lease(store, "run").acquire()
    with pytest.raises(LeaseHeld, match="SQLite allows one writer.*PostgreSQL"):
        Lease(store, "run").acquire()
    store.close()


def test_a_lost_lease_reaches_every_listener_and_a_failing_one_harms_nothing(caplog):
    """The daemon's alerts hear of a lost lease through leases.listening_for_lost; a listener that
    fails is logged, never raised into the state write that found the loss."""
    from reconciler.state import leases as lease_module
    heard: list[tuple[str, str, str]] = []

    def broken(*_: str) -> None:
        raise RuntimeError("the alert target is down")

    with lease_module.listening_for_lost(lambda *args: heard.append(args)), lease_module.listening_for_lost(broken):
        lease_module.lease_lost("cohort:big", "replica-1", "taken over by replica-2")
    lease_module.lease_lost("cohort:big", "replica-1", "after the block: heard by nobody")
    assert heard == [("cohort:big", "replica-1", "taken over by replica-2")]
    assert "lease_lost listener failed: the alert target is down" in caplog.text
