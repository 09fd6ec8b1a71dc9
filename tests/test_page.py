"""The status page (`GET /` and `/cohorts/{id}`) in a real headless Chromium, against a real daemon and emulator.

One daemon and one emulator serve the whole module: the fixture builds a repository whose
cohorts are converged, blocked by a guard, broken mid-edit, broken from the start, orphaned
with a hostile name, and one read from SQL for the trigger. The browser tests skip, saying
why, where Debian's chromium and chromium-driver are not installed; `.ci/run` installs them.
Each view is saved as a PNG under tests/screenshots/ (ignored by git) for a person to look at.
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from reconciler.daemon import charts, overview, page
from reconciler.daemon.queueing import Work
from reconciler.emulator.process import EmulatorProcess
from reconciler.moengage.ratelimit import SlidingWindowLimiter
from reconciler.settings.model import RateLimit
from reconciler.specs.cohorts import SpecSet
from reconciler.state.records import Cohort, CohortRecord, RunRecord, Ending
from reconciler.state.store import StateStore
from tests.conftest import API_KEY, WORKSPACE
from tests.daemon_process import TOKEN, DaemonProcess, eventually
from tests.helpers import Repo, warehouse

pytestmark = pytest.mark.xdist_group("page")  # one daemon, one emulator, one browser for the module

CHROMIUM = os.environ.get("COHORTSYNC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("COHORTSYNC_CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = Path(os.environ.get("COHORTSYNC_SCREENSHOTS", Path(__file__).parent / "screenshots"))
USERS = [f"u{i:04d}" for i in range(1, 401)]
HOSTILE_NAME = ".<script>window.pwned = 'name'</script><img src=x onerror=\"window.pwned = 'img'\">"
HOSTILE_DESCRIPTION = "<img src=x onerror=\"window.pwned = 'description'\"> & <b>bold</b>"


@dataclass
class Site:
    """The running daemon and emulator, and the repository they serve."""

    daemon: DaemonProcess
    emulator: EmulatorProcess
    repo: Repo
    warehouse: sa.Engine

    def status(self) -> dict[str, Any]:
        return self.daemon.get_json("/status")

    def row(self, cohort_id: str) -> dict[str, Any]:
        s = self.status()
        rows = [r for r in s["cohorts"] + s["new_cohorts"] if r["id"] == cohort_id]
        assert rows, f"no row for {cohort_id} yet"  # eventually() waits on an AssertionError
        return rows[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("page")
    wh_url, engine = warehouse(root / "wh.db", USERS[:5])
    emulator = EmulatorProcess("--workspace-id", WORKSPACE, "--api-key", API_KEY)
    repo = Repo(root, base_url=emulator.url, connections={"wh": wh_url})
    repo.file_cohort("beta", USERS[:100], description=HOSTILE_DESCRIPTION)
    repo.file_cohort("vip", USERS[:7])
    repo.file_cohort("guarded", USERS[:100], guards={"max_removals": "10%"})
    repo.spec("sqlc.yaml", "id: sqlc\nname: .SQL cohort\nschedule: 1h\n"
                           "source: {connection: wh, sql: SELECT uid FROM t ORDER BY uid}\n")
    legacy = StateStore.open(f"sqlite:///{root / 'state.db'}")  # a record no spec declares, with a name never checked
    legacy.record_outcome(Cohort("legacy", HOSTILE_NAME, None), Ending(status="converged", converged=True))
    legacy.close()
    daemon = DaemonProcess(repo.config, root / "daemon.log", env={"TEST_WS": WORKSPACE, "TEST_KEY": API_KEY})
    site = Site(daemon, emulator, repo, engine)
    try:
        eventually(lambda: {c: s["size"] for c, s in emulator.segments().items()}
                   == {"beta": 100, "vip": 7, "guarded": 100, "sqlc": 5}, timeout=30)
        for uids in (USERS[:150], USERS[20:150]):  # beta gets three runs: +100, +50, -20
            repo.uids("beta", uids)
            eventually(lambda: emulator.segments()["beta"]["size"] == len(uids), timeout=15)
        repo.uids("guarded", USERS[:10])  # would remove 90 of 100: over the 10% guard
        (repo.cohorts / "vip.yaml").write_text("id: vip\nname: .vip\nsource: {file: uids/vip.txt\n")  # saved mid-edit
        repo.spec("newbie.yaml", "id: newbie\nname: .Newbie\nsource: {sql: SELECT 1, file: x.txt}\n")
        eventually(lambda: site.row("guarded")["status"] == "blocked" and site.row("vip")["status"] == "error"
                   and site.row("newbie")["status"] == "error" and site.row("beta")["synced"] == 130, timeout=20)
        yield site
    finally:
        daemon.stop()
        emulator.stop()
        engine.dispose()


# --- the JSON the page reads, and the daemon's answers (no browser needed) ------------------------------

def test_status_keeps_every_old_field_and_adds_the_pages(site: Site) -> None:
    s = site.status()
    assert {"format_version", "cohorts", "last_run", "queue_pending"} <= set(s)
    old = {"id", "name", "synced", "converged", "last_status", "last_run", "last_success", "last_error", "next_run_in"}
    for row in s["cohorts"]:
        assert old <= set(row)
    assert s["ready"]["ok"] is True and s["rate"]["limit"] == "300/60s" and s["daemon"]["version"]
    assert s["next_timer"]["in"] > 0 and "queue" in s and "running" in s
    beta = site.row("beta")
    assert (beta["status"], beta["mode"], beta["file"], beta["reason"]) == ("converged", "mirror", "beta.yaml", None)
    assert beta["last_change"]["adds"] == 0 and beta["last_change"]["removes"] == 20
    guarded = site.row("guarded")
    assert guarded["status"] == "blocked" and "over max_removals 10%" in guarded["reason"]
    assert [e["file"] for e in s["spec_errors"]] == ["newbie.yaml", "vip.yaml"]
    assert [r["id"] for r in s["new_cohorts"]] == ["newbie"]


def test_cohort_json_has_the_spec_the_runs_and_one_point_per_run(site: Site) -> None:
    doc = site.daemon.get_json("/cohorts/beta/status.json")
    assert doc["spec"]["source"] == {"kind": "file", "connection": None, "path": "uids/beta.txt", "column": None,
                                     "sql": None}
    assert [(p["size"], p["adds"], p["removes"]) for p in doc["series"]] == [(100, 100, 0), (150, 50, 0), (130, 0, 20)]
    assert len(doc["runs"]) == 3
    sql = site.daemon.get_json("/cohorts/sqlc/status.json")["spec"]["source"]
    assert (sql["kind"], sql["connection"], sql["sql"]) == ("sql", "wh", "SELECT uid FROM t ORDER BY uid")
    assert site.daemon.request("GET", "/cohorts/nosuch/status.json")[0] == 404


def test_page_routes_and_their_headers(site: Site) -> None:
    for path, ctype in (("/", "text/html"), ("/cohorts/beta", "text/html"), ("/static/page.js", "text/javascript"),
                        ("/static/page.css", "text/css"), ("/favicon.svg", "image/svg+xml"),
                        ("/cohorts/beta/size.svg?width=500", "image/svg+xml"),
                        ("/cohorts/beta/changes.svg", "image/svg+xml")):
        req = urllib.request.urlopen(site.daemon.url + path, timeout=10)
        assert req.status == 200 and req.headers["Content-Type"].startswith(ctype), path
        assert "script-src 'self'" in req.headers["Content-Security-Policy"]
        body = req.read().decode()
        assert TOKEN not in body and API_KEY not in body
    assert site.daemon.request("GET", "/static/nothing.js")[0] == 404
    status, body = site.daemon.request("GET", "/status")
    assert TOKEN not in body.decode() and API_KEY not in body.decode()


def test_a_trigger_answers_with_what_was_queued(site: Site) -> None:
    status, body = site.daemon.request("POST", "/reconcile?cohort=vip", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 202
    answer = json.loads(body)
    assert answer["cohorts"] == ["vip"] and answer["queued"] in (None, {"cohorts": ["vip"], "reasons": ["http"]})
    assert site.daemon.request("POST", "/reconcile", headers={"Authorization": "Bearer nope"})[0] == 401


# --- the pure parts -------------------------------------------------------------------------------------------

def record(cid: str, **kw: Any) -> CohortRecord:
    base = dict(id=cid, name=f".{cid}", description=None, spec_digest=None, source_digest=None, synced_count=0,
                converged=False, last_run_at=None, last_success_at=None, last_status=None, last_error=None)
    return CohortRecord(**{**base, **kw})


@pytest.mark.parametrize("rec, verdict, spec_error, expected", [
    (None, None, None, ("pending", None)),
    (record("a", last_status="converged"), None, None, ("converged", None)),
    (record("a", last_status="blocked", last_error="guard"), None, None, ("blocked", "guard")),
    (record("a", last_status="converged"), overview.Verdict("unchanged", None, 1.0), None, ("converged", None)),
    (record("a", last_status="converged"), overview.Verdict("failed", "HTTP 400", 1.0), None, ("failed", "HTTP 400")),
    (record("a", last_status="converged"), overview.Verdict("converged", "stale note", 1.0), None, ("converged", None)),
    (record("a", last_status="converged"), None, "a.yaml: invalid YAML", ("error", "a.yaml: invalid YAML")),
])
def test_standing(rec: CohortRecord | None, verdict: overview.Verdict | None, spec_error: str | None,
                  expected: tuple[str, str | None]) -> None:
    assert overview.standing(rec, verdict, spec_error) == expected


def test_series_walks_back_from_todays_size() -> None:
    runs = [RunRecord("r3", "a", "converged", 30.0, sent_removes=5), RunRecord("r2", "a", "failed", 20.0, sent_adds=3),
            RunRecord("r1", "a", "converged", 10.0, sent_adds=12)]
    assert [(p["run_id"], p["size"]) for p in overview.series(runs, 10)] == [("r1", 12), ("r2", 15), ("r3", 10)]
    assert overview.series([], 7) == []


def test_status_document_without_specs_or_timers() -> None:
    live = overview.Live(now=100.0, started_at=50.0, cohorts_dir=Path("cohorts"), specs=SpecSet({}, [], {}),
                         ready=(False, "specs not loaded yet"), rate=RateLimit(10, 2.0), rate_in_use=3,
                         pending=Work({"b", "a"}, reasons={"timer"}), due={"a": 160.0, "b": 130.0})
    doc = overview.status_document({"a": record("a", synced_count=4)}, {}, live)
    assert doc["queue_pending"] is True and doc["queue"] == {"cohorts": ["a", "b"], "reasons": ["timer"]}
    assert doc["next_timer"] == {"at": 130.0, "in": 30.0, "cohorts": ["b"]}
    assert doc["cohorts"][0]["next_run_in"] == 60.0 and doc["cohorts"][0]["synced"] == 4
    assert doc["rate"] == {"limit": "10/2s", "requests": 10, "window": 2.0, "in_use": 3}
    assert doc["ready"] == {"ok": False, "reason": "specs not loaded yet"} and doc["running"] is None


def test_status_document_shows_every_workspaces_rate() -> None:
    """`rate` stays the default workspace's; `rates` has one entry per workspace the daemon syncs to."""
    live = overview.Live(now=1.0, started_at=0.0, cohorts_dir=Path("cohorts"), specs=SpecSet({}, [], {}),
                         ready=(True, "ok"), rate=RateLimit(300, 60.0), rate_in_use=7,
                         rates=[("default", RateLimit(300, 60.0), 7), ("eu", RateLimit(100, 60.0), 99)])
    doc = overview.status_document({}, {}, live)
    assert doc["rate"]["in_use"] == 7
    assert doc["rates"] == [{"workspace": "default", "limit": "300/60s", "requests": 300, "window": 60.0, "in_use": 7},
                            {"workspace": "eu", "limit": "100/60s", "requests": 100, "window": 60.0, "in_use": 99}]


def test_last_changes_are_each_cohorts_newest_run_that_sent(state_url: str) -> None:
    state = StateStore.open(state_url)
    for i, (cid, adds, removes) in enumerate([("a", 5, 0), ("a", 0, 2), ("a", 0, 0), ("b", 0, 0), ("c", 1, 1)]):
        state.record_run(RunRecord(f"r{i}", cid, "failed" if adds + removes == 0 else "converged", float(i),
                                   sent_adds=adds, sent_removes=removes))
    assert {c: (r.run_id, r.sent_adds, r.sent_removes) for c, r in state.last_changes().items()} == {
        "a": ("r1", 0, 2), "c": ("r4", 1, 1)}
    state.close()


def test_rate_in_use_counts_the_places_taken_in_the_window() -> None:
    clock = [100.0]
    limiter = SlidingWindowLimiter(RateLimit(5, 10.0), clock=lambda: clock[0])
    for _ in range(3):
        with limiter.slot():
            assert limiter.in_use() >= 1  # in flight counts
    assert limiter.in_use() == 3
    clock[0] += 11
    assert limiter.in_use() == 0


def test_charts_draw_one_marker_per_run_and_escape_labels() -> None:
    points = [{"run_id": f"r{i}", "at": 1_800_000_000 + 60 * i, "status": "converged", "size": 10 * i,
               "adds": i, "removes": i % 2} for i in range(1, 6)]
    svg = charts.size_chart("<b>x</b>", points, 500)
    assert svg.count('<circle class="pt"') == 5 and 'data-points="5"' in svg
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    bars = charts.changes_chart("a", points, 500)
    assert bars.count("bar-add") == 5 and bars.count("bar-remove") == 3
    assert 'data-points="0"' in charts.size_chart("a", [], 500)
    assert charts.clamp_width("9999") == charts.MAX_WIDTH and charts.clamp_width("x") == charts.DEFAULT_WIDTH
    assert charts.nice_ticks(0, 130) == [0, 50, 100, 150] and charts.nice_ticks(-20, 100)[0] == -50


def test_static_files_ship_in_the_package() -> None:
    """Every file the page loads is package data: pyproject's package-data covers the folder."""
    names = {p.name for p in (Path(page.__file__).parent / "static").iterdir()} - {"__init__.py", "__pycache__"}
    assert names == {n for n, _ in page.STATIC_FILES.values()} | {page.PAGE[0]}
    assert (Path(page.__file__).parent / "static" / "__init__.py").is_file()  # a package the finder picks up
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"reconciler.daemon.static" = ["*.html", "*.css", "*.js", "*.svg"]' in text
    assert {Path(n).suffix for n in names} == {".html", ".css", ".js", ".svg"}
    html = page.static("index.html").decode()
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere


# --- the page in Chromium ---------------------------------------------------------------------------------------

def chromium_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    reason = chromium_missing()
    if reason and (os.environ.get("CI") or os.environ.get("COHORTSYNC_REQUIRE_CHROMIUM")):
        pytest.fail(f"{reason} (.ci/run installs it: mandatory in CI)")
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1360,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shot(driver: Any, name: str) -> Path:
    """Save the whole page (as tall as it is) for a person to look at."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return window.innerWidth")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": max(height, 400), "deviceScaleFactor": 1, "mobile": width < 600})
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


def wait_for(driver: Any, script: str, timeout: float = 15) -> Any:
    """Poll a JavaScript expression in the page until it is truthy; return its value."""
    found: list[Any] = []
    eventually(lambda: found.append(driver.execute_script(f"return {script}")) or found[-1], timeout=timeout)
    return found[-1]


def row_text(driver: Any, cohort_id: str, col: str) -> str:
    return driver.execute_script(
        "const r = document.querySelector(`tr.cohort[data-cohort='${arguments[0]}'] td[data-col='${arguments[1]}']`);"
        "return r ? r.innerText.trim() : null;", cohort_id, col)


def reason_text(driver: Any, cohort_id: str) -> str | None:
    return driver.execute_script(
        "const r = document.querySelector(`tr[data-reason-for='${arguments[0]}']`); return r ? r.innerText : null;",
        cohort_id)


def open_overview(driver: Any, site: Site, query: str = "") -> None:
    driver.get(site.daemon.url + "/" + query)
    wait_for(driver, "document.querySelectorAll('tr.cohort').length >= 1")


def test_table_lists_the_cohorts_with_the_emulators_sizes(site: Site, browser: Any) -> None:
    open_overview(browser, site)
    sizes = {cid: seg["size"] for cid, seg in site.emulator.segments().items()}
    assert set(sizes) == {"beta", "vip", "guarded", "sqlc"}
    wait_for(browser, "document.querySelectorAll('tr.cohort').length === 6")  # + legacy (orphaned) and newbie (new, broken)
    for cid, size in sizes.items():
        eventually(lambda: row_text(browser, cid, "synced") == f"{size:,}")
    assert row_text(browser, "beta", "status") == "✓\nconverged"
    assert row_text(browser, "beta", "change").startswith("+0−20\n")
    assert row_text(browser, "beta", "workspace") == "default" and row_text(browser, "beta", "unconfirmed") == "0"
    assert row_text(browser, "beta", "mode") == "mirror"
    assert "in " in row_text(browser, "beta", "next")
    colour = browser.execute_script("return getComputedStyle(document.querySelector("
                                    "\"tr[data-cohort='beta'] .badge\")).color")
    assert colour == "rgb(26, 127, 55)"  # green beside the word
    tiles = browser.execute_script("return [...document.querySelectorAll('.tile')].map(t => t.innerText)")
    assert any(t.startswith("DAEMON\nReady") for t in tiles) and any("RATE BUDGET" in t for t in tiles)
    shot(browser, "overview")


def test_a_broken_spec_shows_its_error(site: Site, browser: Any) -> None:
    open_overview(browser, site)
    eventually(lambda: row_text(browser, "vip", "status") == "✕\nerror")
    assert "vip.yaml" in reason_text(browser, "vip") and "Error:" in reason_text(browser, "vip")
    assert row_text(browser, "vip", "synced") == "7"  # its members stay as they were
    assert row_text(browser, "newbie", "status") == "✕\nerror" and "newbie.yaml" in reason_text(browser, "newbie")


def test_a_blocked_cohort_shows_its_guard_reason(site: Site, browser: Any) -> None:
    open_overview(browser, site)
    eventually(lambda: row_text(browser, "guarded", "status") == "⚠\nblocked")
    reason = reason_text(browser, "guarded")
    assert reason.startswith("Guard:") and "would remove 90 of 100 synced members, over max_removals 10%" in reason
    assert browser.execute_script("return getComputedStyle(document.querySelector("
                                  "\"tr[data-cohort='guarded'] .badge\")).color") == "rgb(154, 103, 0)"


def test_filter_by_status_and_sort(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    open_overview(browser, site)
    wait_for(browser, "document.querySelectorAll('tr.cohort').length === 6")
    browser.find_element(By.CSS_SELECTOR, "button.chip[data-filter='blocked']").click()
    wait_for(browser, "document.querySelectorAll('tr.cohort').length === 1")
    assert browser.execute_script("return document.querySelector('tr.cohort').dataset.cohort") == "guarded"
    assert browser.current_url.endswith("/?status=blocked")
    shot(browser, "overview-blocked")
    browser.find_element(By.CSS_SELECTOR, "button.chip[data-filter='all']").click()
    browser.find_element(By.CSS_SELECTOR, "th[data-key='synced'] button").click()  # most members first
    order = wait_for(browser, "[...document.querySelectorAll('tr.cohort')].map(r => r.dataset.cohort)")
    assert order[0] == "beta" and browser.current_url.endswith("sort=synced&dir=desc")
    first = lambda: browser.execute_script("return document.querySelector('tr.cohort').dataset.cohort")  # noqa: E731
    open_overview(browser, site, "?status=error")  # a linked view comes back as it was
    eventually(lambda: first() in ("newbie", "vip") and len(browser.find_elements(By.CSS_SELECTOR, "tr.cohort")) == 2)


def test_names_errors_and_descriptions_show_as_text(site: Site, browser: Any) -> None:
    open_overview(browser, site)
    eventually(lambda: row_text(browser, "legacy", "id") == "legacy\n" + HOSTILE_NAME)
    assert browser.execute_script("return window.pwned") is None
    assert browser.execute_script("return document.querySelectorAll('#cohorts script, #cohorts img').length") == 0
    browser.get(site.daemon.url + "/cohorts/beta")
    wait_for(browser, "document.querySelector('#cohort-spec dl')")
    assert HOSTILE_DESCRIPTION in browser.find_element("css selector", "#cohort-spec").text
    assert browser.execute_script("return window.pwned") is None
    assert browser.execute_script("return document.querySelectorAll('#cohort-spec img, #cohort-spec b').length") == 0


def test_cohort_view_charts_one_point_per_run(site: Site, browser: Any) -> None:
    runs = site.daemon.get_json("/cohorts/beta/status.json")["runs"]
    browser.get(site.daemon.url + "/cohorts/beta")
    wait_for(browser, "document.querySelectorAll('#size-chart svg circle.pt').length > 0")
    assert browser.execute_script("return document.querySelectorAll('#size-chart svg circle.pt').length") == len(runs) == 3
    assert browser.execute_script("return document.querySelectorAll('#changes-chart svg rect.bar').length") == 3
    assert browser.execute_script("return document.querySelectorAll('#runs-body tr').length") == 3
    facts = browser.find_element("css selector", "#cohort-facts").text
    assert "SYNCED\n130" in facts and "WORKSPACE\ndefault" in facts
    spec = browser.find_element("css selector", "#cohort-spec").text
    assert "beta.yaml" in spec and "uids/beta.txt" in spec
    shot(browser, "cohort")
    browser.get(site.daemon.url + "/cohorts/guarded")
    wait_for(browser, "document.querySelector('#cohort-reason .reason')")
    assert "over max_removals 10%" in browser.find_element("css selector", "#cohort-reason").text
    shot(browser, "cohort-blocked")


def test_trigger_with_the_token_queues_a_reconcile_the_page_shows_converged(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    with site.warehouse.begin() as conn:  # no file changes: only a trigger (or the 1h timer) picks this up
        conn.exec_driver_sql("INSERT INTO t VALUES ('u9998'), ('u9999')")
    open_overview(browser, site)
    browser.execute_script("sessionStorage.clear()")
    eventually(lambda: row_text(browser, "sqlc", "synced") == "5")
    browser.find_element(By.CSS_SELECTOR, "button[data-cohort='sqlc']").click()
    wait_for(browser, "document.getElementById('token-dialog').open")
    browser.find_element(By.ID, "token-input").send_keys("not-the-token")
    browser.find_element(By.ID, "token-submit").click()
    wait_for(browser, "!document.getElementById('token-error').hidden")
    assert "refused" in browser.find_element(By.ID, "token-error").text
    browser.find_element(By.ID, "token-input").send_keys(TOKEN)
    shot(browser, "token")
    site.emulator.configure(latency=4.0)  # longer than a poll period (3 s): some poll sees the run
    try:
        browser.find_element(By.ID, "token-submit").click()
        toast = wait_for(browser, "!document.getElementById('toast').hidden && document.getElementById('toast').innerText")
        assert toast.startswith("Queued: sqlc")
        eventually(lambda: row_text(browser, "sqlc", "status") == "✓\nconverged\n↻\nrunning", timeout=10)
        assert "Reconciling" in browser.execute_script("return document.querySelector(\"[data-tile='now']\").innerText")
        shot(browser, "running")
    finally:
        site.emulator.configure(latency=0.0)
    eventually(lambda: row_text(browser, "sqlc", "synced") == "7" and row_text(browser, "sqlc", "status") == "✓\nconverged",
               timeout=20)
    assert site.emulator.segments()["sqlc"]["size"] == 7
    assert browser.execute_script("return sessionStorage.getItem('cohortsync.token')") == TOKEN
    assert browser.execute_script("return localStorage.length + document.cookie.length") == 0
    shot(browser, "triggered")


class CannedStatus(ThreadingHTTPServer):
    """The page's own files, beside a /status document the test writes: for fields other issues add."""

    daemon_threads = True

    def __init__(self) -> None:
        self.document: dict[str, Any] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/status":
                    body, ctype = json.dumps(server.document).encode(), "application/json"
                else:
                    answer = page.answer(url.path, url.query, lambda _id: None)
                    assert answer is not None, url.path
                    body, ctype = answer.body, answer.content_type
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_fields_other_issues_add_show_when_present_and_an_older_status_still_reads(site: Site, browser: Any) -> None:
    """`unconfirmed`, `workspace(s)`, `refused`, `diff`, the replica and its leases come from other issues: the
    page shows them when /status has them; a /status with none of the page's fields still makes a table."""
    doc = site.status()
    rows = {r["id"]: r for r in doc["cohorts"]}
    rows["beta"].update(unconfirmed={"count": 12, "since": doc["generated_at"] - 60}, workspace="eu", refused=4,
                        diff="warehouse", snapshot="wh/cohortsync/cs_snap_beta_0123456789ab")
    rows["sqlc"].update(unconfirmed=3, workspace="us")
    doc.update(replica={"id": "run-7f3a@host-1"}, leases=[{"name": "cohort:beta", "holder": "run-7f3a@host-1"}])
    canned = CannedStatus()
    try:
        canned.document = doc
        browser.get(canned.url + "/")
        eventually(lambda: row_text(browser, "beta", "unconfirmed") == "12")
        assert row_text(browser, "beta", "workspace") == "eu" and row_text(browser, "sqlc", "workspace") == "us"
        assert row_text(browser, "sqlc", "unconfirmed") == "3"
        tile = browser.execute_script("return document.querySelector(\"[data-tile='replica']\").innerText")
        assert "run-7f3a@host-1" in tile and "cohort:beta → run-7f3a@host-1" in tile
        members = browser.execute_script("return document.querySelector(\"[data-tile='members']\").innerText")
        assert "15 unconfirmed" in members and "4 refused" in members
        assert row_text(browser, "beta", "refused") == "4" and row_text(browser, "sqlc", "refused") == "0"
        assert "warehouse" in row_text(browser, "beta", "mode") and "warehouse" not in row_text(browser, "sqlc", "mode")
        doc["rates"] = [{"workspace": "default", "limit": "300/60s", "requests": 300, "window": 60.0, "in_use": 30},
                        {"workspace": "eu", "limit": "100/60s", "requests": 100, "window": 60.0, "in_use": 90}]
        browser.get(canned.url + "/")
        eventually(lambda: browser.execute_script("return document.querySelectorAll(\"[data-tile^='rate-budget']\").length") == 2)
        eu = browser.execute_script("return document.querySelector(\"[data-tile='rate-budget-eu']\").innerText")
        assert "90 / 100" in eu and browser.execute_script(
            "return document.querySelector(\"[data-tile='rate-budget-eu'] .meter\").classList.contains('hot')")
        old = ("id", "name", "synced", "converged", "last_status", "last_run", "last_success", "last_error", "next_run_in")
        canned.document = {"format_version": 1, "last_run": {}, "queue_pending": False,
                           "cohorts": [{k: r[k] for k in old} for r in doc["cohorts"]]}
        browser.get(canned.url + "/")
        eventually(lambda: row_text(browser, "guarded", "status") == "⚠\nblocked")
        assert "max_removals" in reason_text(browser, "guarded") and row_text(browser, "beta", "synced") == "130"
    finally:
        canned.shutdown()
        canned.server_close()


def test_readable_on_a_phone(site: Site, browser: Any) -> None:
    browser.set_window_size(390, 844)
    try:
        open_overview(browser, site)
        wait_for(browser, "document.querySelectorAll('tr.cohort').length === 6")
        time.sleep(0.3)  # the layout settles after the first poll
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(browser, "phone")
        browser.get(site.daemon.url + "/cohorts/beta")
        wait_for(browser, "document.querySelectorAll('#size-chart svg circle.pt').length === 3")
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(browser, "phone-cohort")
    finally:
        browser.set_window_size(1360, 1000)


def test_screenshots_are_not_committed() -> None:
    assert "tests/screenshots/" in (Path(__file__).parent.parent / ".gitignore").read_text().split()


def test_unconfirmed_members_show_from_a_real_daemon(site: Site, browser: Any) -> None:
    """A batch whose answer never comes leaves its members unconfirmed: the lead's field, from the state, on the page."""
    site.emulator.configure(drop_rate=1.0)
    try:
        site.repo.file_cohort("flaky", USERS[:20])
        eventually(lambda: site.row("flaky")["status"] in ("failed", "unconfirmed")  # retries given up: the run ended
                   and site.row("flaky")["unconfirmed"] == 20, timeout=30)
    finally:
        site.emulator.configure(drop_rate=0.0)
    open_overview(browser, site)
    eventually(lambda: row_text(browser, "flaky", "unconfirmed") == "20")
    title = browser.execute_script("return document.querySelector(\"tr[data-cohort='flaky'] td[data-col='unconfirmed'] span\").title")
    assert title.startswith("sent 20") and "the next plan settles them" in title
    assert "20 unconfirmed" in browser.execute_script("return document.querySelector(\"[data-tile='members']\").innerText")
    assert row_text(browser, "flaky", "status").split("\n")[1] in ("failed", "unconfirmed")
    shot(browser, "unconfirmed")
