// cohortsync status page: polls /status (and a cohort's status.json) and draws it. No framework,
// no build step. Every string from the daemon reaches the page through textContent or an
// attribute, never as markup: a cohort name or an error is always shown as text. The charts are
// SVG drawn (and escaped) by the daemon.
"use strict";
(() => {
  const POLL_MS = 3000;
  const TOKEN_KEY = "cohortsync.token";
  // the statuses of reconciler/common/statuses.py, worst first; "pending" is a cohort no run has seen yet
  const SEVERITY = ["error", "failed", "unconfirmed", "blocked", "stale", "interrupted", "stopped", "running", "changed",
    "orphaned", "pending", "suspended", "converged", "pruned"];
  const HEALTHY = new Set(["converged", "pruned", "unchanged"]);
  const QUIET = new Set([...HEALTHY, "changed", "running", "suspended", "orphaned", "pending"]);  // nobody need act
  const GLYPH = { converged: "✓", pruned: "✓", blocked: "⚠", error: "✕", failed: "✕", unconfirmed: "?", suspended: "⏸",
    orphaned: "∅", pending: "…", interrupted: "⏹", stopped: "⏹", stale: "↻", changed: "~", running: "↻", queued: "⋯" };
  const WHY = { blocked: "Guard:", error: "Error:", failed: "Failed:", unconfirmed: "Unconfirmed:", stale: "Stale:",
    interrupted: "Interrupted:", stopped: "Stopped:", suspended: "Suspended:", orphaned: "Orphaned:" };

  const view = {
    status: null, skew: 0, failures: 0, filter: "all", search: "", sort: { key: "status", dir: 1 },
    cohortId: null, cohort: null, chartKey: "", runsSig: "",
  };
  const $ = (id) => document.getElementById(id);

  // --- DOM helpers: text goes in as text, always ---------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    append(el, children);
    return el;
  }
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const fill = (el, ...children) => { el.replaceChildren(); return append(el, children); };

  // --- numbers and times ------------------------------------------------------------------------
  const fmt = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
  const now = () => Date.now() / 1000 + view.skew;
  function epoch(v) {
    if (v === null || v === undefined || v === "" || v === "never") return null;
    if (typeof v === "number") return v;
    const t = Date.parse(String(v).replace(" ", "T"));
    return Number.isNaN(t) ? null : t / 1000;
  }
  function utc(ts) {
    return ts ? new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
  }
  function span(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  const took = (seconds) => (seconds < 1 ? `${Math.round(seconds * 1000)} ms` : seconds < 10 ? `${seconds.toFixed(1)}s` : span(seconds));
  function every(seconds) {  // a schedule: 15m, 1h, 1h 30m
    const s = Math.round(seconds);
    if (s % 86400 === 0) return `${s / 86400}d`;
    if (s % 3600 === 0) return `${s / 3600}h`;
    if (s % 60 === 0 && s < 3600) return `${s / 60}m`;
    return span(s);
  }
  function relative(ts, mode) {
    if (!ts) return mode === "until" ? "—" : "never";
    const d = ts - now();
    if (mode === "until") return d <= 1 ? "due now" : `in ${span(d)}`;
    return -d < 5 ? "just now" : `${span(-d)} ago`;
  }
  // a time that keeps itself current: the ticker rewrites every .when once a second
  const when = (ts, mode = "ago") =>
    h("span", { class: "when", "data-ts": ts || "", "data-mode": mode, title: utc(ts) || null }, relative(ts, mode));
  function tick() {
    for (const el of document.querySelectorAll(".when[data-ts]")) {
      const ts = Number(el.dataset.ts) || null;
      el.textContent = relative(ts, el.dataset.mode);
    }
  }

  // --- what a /status row means ------------------------------------------------------------------
  function unconfirmedOf(r) {
    const u = r.unconfirmed;
    let n = 0, since = r.unconfirmed_since ?? r.unconfirmed_sent_at ?? r.unconfirmed_at ?? null;
    if (typeof u === "number") n = u;
    else if (u && typeof u === "object") {
      n = u.count ?? u.members ?? u.total ?? 0;
      since = u.since ?? u.sent_at ?? u.oldest_sent_at ?? since;
    }
    return { n: Number(n) || 0, since: epoch(since) };
  }
  function workspaceOf(r) {
    if (typeof r.workspace === "string" && r.workspace) return r.workspace;
    if (Array.isArray(r.workspaces) && r.workspaces.length) return r.workspaces.join(", ");
    return "default";
  }
  function activityOf(id, s) {
    const has = (w) => w && (w.cohorts === "all" || (Array.isArray(w.cohorts) && w.cohorts.includes(id)));
    if (has(s.running)) return "running";
    if (has(s.queue)) return "queued";
    return null;
  }
  function rowOf(r, s) {
    let status = r.status || r.last_status || "pending";  // an older daemon has no `status`
    if (status === "unchanged") status = "converged";
    const reason = HEALTHY.has(status) ? null : (r.reason ?? r.last_error ?? null);
    return {
      id: String(r.id), name: r.name || "", workspace: workspaceOf(r), mode: r.mode || "", status, reason,
      synced: Number(r.synced) || 0, unconfirmed: unconfirmedOf(r), change: r.last_change || null,
      refused: Number(r.refused) || 0,  // uids MoEngage refused (or never valid): kept, not sent again
      lastSuccess: epoch(r.last_success_at ?? r.last_success), lastRun: epoch(r.last_run_at ?? r.last_run),
      nextRun: r.next_run_at ?? (typeof r.next_run_in === "number" ? now() + r.next_run_in : null),
      file: r.file || null, activity: activityOf(String(r.id), s),
      diff: r.diff === "warehouse" ? "warehouse" : "local", snapshot: r.snapshot || null,  // where it is diffed
    };
  }
  const rowsOf = (s) => [...(s.cohorts || []), ...(s.new_cohorts || [])].map((r) => rowOf(r, s));
  const rank = (status) => { const i = SEVERITY.indexOf(status); return i < 0 ? SEVERITY.length : i; };

  function badge(status, activity) {
    const known = GLYPH[status] ? status : "unknown";
    return [
      h("span", { class: `badge s-${known}`, "data-status": status },
        h("span", { class: "glyph", "aria-hidden": "true" }, GLYPH[status] || "•"), status),
      activity ? h("span", { class: `badge activity s-${activity}`, "data-activity": activity },
        h("span", { class: activity === "running" ? "glyph spin" : "glyph", "aria-hidden": "true" }, GLYPH[activity]),
        activity) : null,
    ];
  }
  function reasonBox(status, reason) {
    return h("div", { class: `reason ${status}` }, h("span", { class: "why" }, WHY[status] || "Note:"), reason);
  }
  function changeCell(c) {
    if (!c) return h("span", { class: "muted" }, "—");
    return h("span", { class: "change" },
      h("span", { class: "add", title: "members added" }, `+${fmt(c.adds)}`),
      h("span", { class: "remove", title: "members removed" }, `−${fmt(c.removes)}`),
      h("div", { class: "cname" }, when(c.at)));
  }

  // --- the health tiles ---------------------------------------------------------------------------
  function tile(label, value, sub, tone, extra) {
    return h("div", { class: `tile ${tone || ""}`, "data-tile": label.toLowerCase().replace(/\W+/g, "-") },
      h("div", { class: "label" }, label), h("div", { class: "value" }, value),
      sub ? h("div", { class: "sub" }, sub) : null, extra || null);
  }
  function describeWork(w) {
    if (!w) return null;
    const what = w.cohorts === "all" ? "all cohorts" : (w.cohorts || []).join(", ");
    return w.reasons && w.reasons.length ? `${what} (${w.reasons.join(", ")})` : what;
  }
  function replicaTile(s) {
    const rep = s.replica ?? s.holder ?? null;
    const leases = s.leases ?? null;
    if (rep === null && leases === null && !Array.isArray(s.replicas)) return null;
    const name = rep === null ? "—" : typeof rep === "object" ? (rep.id ?? rep.name ?? rep.holder ?? JSON.stringify(rep)) : rep;
    let sub = "";
    if (Array.isArray(leases)) {
      sub = leases.map((l) => (typeof l === "object" && l ? [l.name ?? l.cohort ?? l.id, l.holder ?? l.replica]
        .filter(Boolean).join(" → ") : String(l))).join(", ");
    } else if (leases && typeof leases === "object") {
      sub = Object.entries(leases).map(([k, v]) => `${k} → ${typeof v === "object" ? (v.holder ?? JSON.stringify(v)) : v}`).join(", ");
    }
    const leased = sub ? `Leases: ${sub}` : "";
    if (Array.isArray(s.replicas)) {
      const each = s.replicas.map((r) => (typeof r === "object" && r
        ? `${r.id ?? r.holder ?? "?"}: ${fmt(Number(r.cohorts) || 0)} cohort(s)` : String(r))).join(", ");
      return tile("Replica", String(name), [`${s.replicas.length} replica(s)${each ? " · " + each : ""}`, leased]
        .filter(Boolean).join(" · "), "info");
    }
    return tile("Replica", String(name), leased || null, "info");
  }
  function renderHealth(s, rows) {
    const ready = s.ready || { ok: true, reason: "" };
    const counts = {};
    for (const r of rows) counts[r.status] = (counts[r.status] || 0) + 1;
    const bad = rows.filter((r) => !QUIET.has(r.status)).length;
    const summary = Object.keys(counts).sort((a, b) => rank(a) - rank(b)).map((k) => `${counts[k]} ${k}`).join(" · ");
    const members = rows.reduce((a, r) => a + r.synced, 0);
    if (view.cohortId === null) document.title = bad ? `(${bad}) cohortsync` : "cohortsync";
    const unconfirmed = rows.reduce((a, r) => a + r.unconfirmed.n, 0);
    const refused = rows.reduce((a, r) => a + r.refused, 0);
    const running = s.running ? `${describeWork(s.running)} for ${span(now() - (s.running.since || now()))}` : null;
    const queued = describeWork(s.queue);
    const rates = Array.isArray(s.rates) && s.rates.length ? s.rates : (s.rate ? [{ workspace: null, ...s.rate }] : []);
    const next = s.next_timer;
    fill($("health"),
      tile("Daemon", ready.ok ? "Ready" : "Not ready", ready.reason || null, ready.ok ? "ok" : "bad"),
      tile("Cohorts", `${rows.length}`, summary || "none yet", bad ? "bad" : "ok"),
      tile("Now", running ? "Reconciling" : "Idle", [running, queued ? `Queued: ${queued}` : "Queue empty"]
        .filter(Boolean).join(" · "), running || queued ? "info" : ""),
      tile("Next timer", next ? when(next.at, "until") : "—", next ? next.cohorts.join(", ") : "no timer set"),
      ...rates.map((rate) => tile(rates.length > 1 ? `Rate budget · ${rate.workspace}` : "Rate budget",
        `${fmt(rate.in_use)} / ${fmt(rate.requests)}`, `requests in the last ${rate.window}s`, "", meter(rate))),
      tile("Members", fmt(members), [unconfirmed ? `${fmt(unconfirmed)} unconfirmed` : "all confirmed",
        refused ? `${fmt(refused)} refused` : null].filter(Boolean).join(" · "), unconfirmed || refused ? "warn" : ""),
      replicaTile(s));
  }

  // A rate window's places in use, as a bar; hot above 80%.
  function meter(rate) {
    const bar = h("div", { class: `meter ${rate.in_use / rate.requests > 0.8 ? "hot" : ""}` }, h("span"));
    bar.firstChild.style.width = `${Math.min(100, (100 * rate.in_use) / rate.requests).toFixed(1)}%`;
    return bar;
  }

  // --- the cohorts table ----------------------------------------------------------------------------
  const COLUMNS = [
    { key: "id", label: "Cohort", cls: "first", sort: (r) => r.id.toLowerCase(),
      cell: (r) => [h("a", { class: "cid", href: `/cohorts/${encodeURIComponent(r.id)}` }, r.id),
        h("div", { class: "cname" }, r.name)] },
    { key: "workspace", label: "Workspace", sort: (r) => r.workspace, cell: (r) => r.workspace },
    { key: "mode", label: "Mode", sort: (r) => r.mode, cell: (r) => [r.mode || "—", r.diff === "warehouse"
      ? h("span", { class: "tag", "data-diff": "warehouse", title: `diffed in the warehouse against its snapshot ${r.snapshot || ""}` },
        "warehouse") : null] },
    { key: "status", label: "Status", sort: (r) => rank(r.status), cell: (r) => badge(r.status, r.activity) },
    { key: "synced", label: "Synced", num: true, sort: (r) => r.synced, cell: (r) => fmt(r.synced) },
    { key: "unconfirmed", label: "Unconfirmed", num: true, sort: (r) => r.unconfirmed.n,
      cell: (r) => h("span", { title: r.unconfirmed.n ? `sent ${utc(r.unconfirmed.since) || "?"}, no answer came: the next plan settles them` : null },
        fmt(r.unconfirmed.n)) },
    { key: "refused", label: "Refused", num: true, sort: (r) => r.refused,
      cell: (r) => h("span", { title: r.refused ? "uids MoEngage refused: not sent again until their row changes (cohortsync refused)" : null },
        fmt(r.refused)) },
    { key: "change", label: "Last change", sort: (r) => (r.change ? r.change.at : 0), cell: (r) => changeCell(r.change) },
    { key: "success", label: "Last success", sort: (r) => r.lastSuccess || 0, cell: (r) => when(r.lastSuccess) },
    { key: "next", label: "Next run", sort: (r) => r.nextRun || Infinity, cell: (r) => when(r.nextRun, "until") },
    { key: "act", label: "", cls: "act", cell: (r) => h("button", { class: "btn small", type: "button", "data-cohort": r.id,
      "aria-label": `Reconcile ${r.id}` }, "Reconcile") },
  ];

  function renderHead() {
    fill($("cohorts-head"), COLUMNS.map((c) => {
      const sorted = view.sort.key === c.key;
      return h("th", { class: c.num ? "num" : null, scope: "col", "data-key": c.key,
        "aria-sort": sorted ? (view.sort.dir > 0 ? "ascending" : "descending") : null },
        c.sort ? h("button", { type: "button", onclick: () => sortBy(c.key) }, c.label) : c.label);
    }));
  }
  function sortBy(key) {
    view.sort = view.sort.key === key ? { key, dir: -view.sort.dir } : { key, dir: key === "id" || key === "status" ? 1 : -1 };
    saveQuery();
    renderHead();
    renderTable();
  }
  function visibleRows(rows) {
    const q = view.search.trim().toLowerCase();
    const col = COLUMNS.find((c) => c.key === view.sort.key) || COLUMNS[3];
    return rows
      .filter((r) => view.filter === "all" || r.status === view.filter)
      .filter((r) => !q || r.id.toLowerCase().includes(q) || r.name.toLowerCase().includes(q))
      .sort((a, b) => {
        const x = col.sort(a), y = col.sort(b);
        return (x < y ? -1 : x > y ? 1 : 0) * view.sort.dir || a.id.localeCompare(b.id);
      });
  }
  function renderFilters(rows) {
    const counts = {};
    for (const r of rows) counts[r.status] = (counts[r.status] || 0) + 1;
    const keys = Object.keys(counts).sort((a, b) => rank(a) - rank(b));
    if (view.filter !== "all" && !keys.includes(view.filter)) keys.push(view.filter);
    const chip = (key, label, n) => h("button", { class: "chip", type: "button", "data-filter": key,
      "aria-pressed": view.filter === key ? "true" : "false", onclick: () => { view.filter = key; saveQuery(); renderTable(); } },
      key === "all" ? null : badgeDot(key), label, h("span", { class: "n" }, n));
    fill($("filters"), chip("all", "All", rows.length), keys.map((k) => chip(k, k, counts[k] || 0)));
  }
  const badgeDot = (status) => h("span", { class: `dot s-${GLYPH[status] ? status : "unknown"}`, "aria-hidden": "true" },
    GLYPH[status] || "•");

  function rowElements(r) {
    const tr = h("tr", { class: `cohort${r.reason ? " has-reason" : ""}`, "data-cohort": r.id, "data-status": r.status },
      COLUMNS.map((c) => h("td", { class: [c.cls, c.num ? "num" : null].filter(Boolean).join(" ") || null,
        "data-col": c.key, "data-label": c.label }, c.cell(r))));
    if (!r.reason) return [tr];
    return [tr, h("tr", { class: "reason-row", "data-reason-for": r.id },
      h("td", { colspan: COLUMNS.length }, reasonBox(r.status, r.reason)))];
  }
  function renderTable() {
    if (!view.status) return;
    const rows = rowsOf(view.status);
    renderFilters(rows);
    const shown = visibleRows(rows);
    const body = $("cohorts-body");
    const old = new Map([...body.children].map((el) => [el.dataset.key, el]));
    const wanted = [];
    for (const r of shown) {
      const sig = JSON.stringify(r);  // a row is rebuilt only when what it shows changed: clicks are not lost
      const key = `c:${r.id}`;
      let els = [old.get(key), old.get(`r:${r.id}`)].filter(Boolean);
      if (!els.length || els[0].dataset.sig !== sig) {
        els = rowElements(r);
        els[0].dataset.key = key;
        els[0].dataset.sig = sig;
        if (els[1]) els[1].dataset.key = `r:${r.id}`;
      }
      wanted.push(...els);
    }
    const same = wanted.length === body.children.length && wanted.every((el, i) => body.children[i] === el);
    if (!same) body.replaceChildren(...wanted);
    const none = $("no-rows");
    none.hidden = shown.length > 0;
    none.textContent = rows.length ? "No cohort matches this filter." : "No cohorts yet: the daemon has not synced any.";
  }

  // --- one cohort -------------------------------------------------------------------------------------
  function fact(label, ...value) { return h("div", {}, h("dt", {}, label), h("dd", {}, ...value)); }
  function renderCohort() {
    const doc = view.cohort;
    if (!doc) return;
    const r = rowOf(doc.cohort, view.status || {});
    document.title = `${r.id} · cohortsync`;
    fill($("cohort-id"), r.id);
    fill($("cohort-badge"), badge(r.status, r.activity));
    fill($("cohort-name"), r.name || "");
    fill($("cohort-reason"), r.reason ? reasonBox(r.status, r.reason) : null);
    const schedule = doc.cohort.schedule;
    const interval = (view.status && view.status.daemon && view.status.daemon.interval) || null;
    fill($("cohort-facts"),
      fact("Synced", fmt(r.synced)),
      fact("Unconfirmed", fmt(r.unconfirmed.n)),
      fact("Refused", fmt(r.refused)),
      fact("Workspace", r.workspace),
      fact("Mode", r.mode || "—"),
      fact("Diff", r.diff === "warehouse" ? `in the warehouse, against ${r.snapshot || "its snapshot"}` : "here, against the state"),
      fact("Last change", changeCell(r.change)),
      fact("Last success", when(r.lastSuccess)),
      fact("Last run", when(r.lastRun)),
      fact("Next run", when(r.nextRun, "until")),
      fact("Schedule", schedule ? `every ${every(schedule)}` : interval ? `${every(interval)} (default)` : "default"));
    renderSpec(doc);
    renderRuns(doc.runs || []);
    renderCharts(doc);
  }
  function renderSpec(doc) {
    const spec = doc.spec;
    if (!spec) {
      fill($("cohort-spec"), h("p", { class: "muted" }, doc.cohort.file
        ? `${doc.cohort.file} did not load: the error above says why. Its members are kept as they are.`
        : "No spec declares this cohort (orphaned): its members are kept unless pruning is on."));
      return;
    }
    const src = spec.source || {};
    const rows = [["File", h("code", {}, spec.file)], ["Source", src.kind]];
    if (src.connection) rows.push(["Connection", h("code", {}, src.connection)]);
    if (src.path) rows.push([src.kind === "file" ? "UID file" : "SQL file", h("code", {}, src.path)]);
    if (src.column) rows.push(["Column", h("code", {}, src.column)]);
    if (src.sql) rows.push(["Query", h("pre", { class: "sql" }, src.sql)]);
    rows.push(["Guards", `allow_empty: ${spec.allow_empty}, max_removals: ${spec.max_removals ?? "none"}`]);
    if (spec.suspended) rows.push(["Suspended", "yes: apply and the daemon skip it"]);
    if (spec.description) rows.push(["Description", spec.description]);
    fill($("cohort-spec"), h("dl", { class: "spec" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  }
  const RUN_COLUMNS = ["Started", "Run", "Trigger", "Result", "Sent", "Planned", "Requests", "Retries", "Took", "Error"];
  const RUN_NUMBERS = new Set(["Requests", "Retries", "Took"]);
  function renderRuns(runs) {
    const sig = JSON.stringify(runs.map((r) => [r.run_id, r.status, r.finished_at]));
    if (sig === view.runsSig) return;
    view.runsSig = sig;
    fill($("runs-head"), RUN_COLUMNS.map((c) => h("th", { scope: "col", class: RUN_NUMBERS.has(c) ? "num" : null }, c)));
    fill($("runs-body"), runs.map((r) => h("tr", { "data-run": r.run_id },
      h("td", {}, when(r.started_at)),
      h("td", {}, h("code", {}, r.run_id)),
      h("td", {}, r.trigger),
      h("td", {}, badge(r.status === "unchanged" ? "converged" : r.status)),
      h("td", { class: "change" }, h("span", { class: "add" }, `+${fmt(r.sent_adds)}`),
        h("span", { class: "remove" }, `−${fmt(r.sent_removes)}`),
        r.unconfirmed ? h("div", { class: "cname" }, `${fmt(r.unconfirmed)} sent, no answer`) : null),
      h("td", { class: "muted" }, `+${fmt(r.planned_adds)} −${fmt(r.planned_removes)}`),
      h("td", { class: "num" }, fmt(r.requests)),
      h("td", { class: "num" }, r.throttled ? `${fmt(r.retries)} (+${fmt(r.throttled)} 429)` : fmt(r.retries)),
      h("td", { class: "num" }, r.finished_at ? took(r.finished_at - r.started_at) : "—"),
      h("td", {}, r.error ? h("div", { class: "reason failed" }, r.error) : ""))));
    $("no-runs").hidden = runs.length > 0;
    $("runs").hidden = runs.length === 0;
  }
  async function renderCharts(doc) {
    const series = doc.series || [];
    const box = $("size-chart");
    const width = Math.max(280, Math.floor(box.clientWidth || 600));
    const last = series[series.length - 1];
    const key = `${series.length}:${last ? last.run_id + last.size : ""}:${width}`;
    if (key === view.chartKey) return;
    view.chartKey = key;
    const base = `/cohorts/${encodeURIComponent(doc.cohort.id)}`;
    await Promise.all([["size", box], ["changes", $("changes-chart")]].map(async ([kind, el]) => {
      const resp = await fetch(`${base}/${kind}.svg?width=${width}`, { cache: "no-store" });
      if (!resp.ok) return;
      const parsed = new DOMParser().parseFromString(await resp.text(), "image/svg+xml");
      const svg = parsed.documentElement;
      if (svg.nodeName !== "svg") return;
      for (const s of svg.querySelectorAll("script, foreignObject")) s.remove();
      el.replaceChildren(document.importNode(svg, true));
    }));
  }

  // --- the reconcile button -----------------------------------------------------------------------
  function askToken(message) {
    const dialog = $("token-dialog"), input = $("token-input"), err = $("token-error");
    input.value = "";
    err.hidden = !message;
    err.textContent = message || "";
    return new Promise((resolve) => {
      const done = (value) => {
        $("token-form").removeEventListener("submit", submit);
        $("token-cancel").removeEventListener("click", cancel);
        dialog.removeEventListener("cancel", cancel);
        if (dialog.open) dialog.close();
        resolve(value);
      };
      const submit = (e) => { e.preventDefault(); done(input.value.trim() || null); };
      const cancel = (e) => { e.preventDefault(); done(null); };
      $("token-form").addEventListener("submit", submit);
      $("token-cancel").addEventListener("click", cancel);
      dialog.addEventListener("cancel", cancel);
      dialog.showModal();
      input.focus();
    });
  }
  async function trigger(cohort, button) {
    let token = sessionStorage.getItem(TOKEN_KEY);
    let message = null;
    if (button) button.disabled = true;
    try {
      for (;;) {
        if (!token) token = await askToken(message);
        if (!token) return;
        const url = "/reconcile" + (cohort ? `?cohort=${encodeURIComponent(cohort)}` : "");
        let resp;
        try {
          resp = await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
        } catch (e) {
          toast("The daemon could not be reached: nothing was queued.", true);
          return;
        }
        if (resp.status === 401) {
          sessionStorage.removeItem(TOKEN_KEY);
          token = null;
          message = "The daemon refused that token. Try again.";
          tokenButton();
          continue;
        }
        if (resp.status !== 202) {
          toast(`The daemon answered ${resp.status}: nothing was queued.`, true);
          return;
        }
        sessionStorage.setItem(TOKEN_KEY, token);
        tokenButton();
        const body = await resp.json();
        const queued = describeWork(body.queued) || (body.cohorts === "all" ? "all cohorts" : [].concat(body.cohorts).join(", "));
        toast(`Queued: ${queued}. This page shows the result when the run ends.`);
        poll();
        return;
      }
    } finally {
      if (button) button.disabled = false;
    }
  }
  let toastTimer = null;
  function toast(text, bad) {
    const el = $("toast");
    el.textContent = text;
    el.className = `toast${bad ? " bad" : ""}`;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 8000);
  }
  function tokenButton() { $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY); }

  // --- polling ------------------------------------------------------------------------------------------
  async function getJSON(url) {
    const resp = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw Object.assign(new Error(body.error || `${url} answered ${resp.status}`), { status: resp.status });
    return body;
  }
  let pollTimer = null;
  async function poll() {
    clearTimeout(pollTimer);
    if (document.hidden) { pollTimer = setTimeout(poll, POLL_MS); return; }
    try {
      const s = await getJSON("/status");
      if (typeof s.generated_at === "number") view.skew = s.generated_at - Date.now() / 1000;
      view.status = s;
      view.failures = 0;
      if (view.cohortId !== null) {
        try {
          view.cohort = await getJSON(`/cohorts/${encodeURIComponent(view.cohortId)}/status.json`);
          $("banner").hidden = true;
        } catch (e) {
          if (e.status !== 404) throw e;
          view.cohort = null;
          fill($("cohort-id"), view.cohortId);
          showBanner(`No cohort ${view.cohortId} is known to this daemon.`);
        }
      } else {
        $("banner").hidden = true;
      }
      render();
      const live = $("live");
      live.className = "live on";
      live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      view.failures += 1;
      const live = $("live");
      live.className = "live off";
      live.textContent = "connection lost: retrying";
      showBanner(`Cannot read the daemon's status: ${e.message}. The page keeps trying.`);
    }
    pollTimer = setTimeout(poll, POLL_MS);
  }
  function showBanner(text) { const b = $("banner"); b.textContent = text; b.hidden = false; }
  function render() {
    const s = view.status;
    renderHealth(s, rowsOf(s));
    const d = s.daemon || {};
    $("version").textContent = d.version ? `cohortsync ${d.version}${d.started_at ? ` · up ${span(now() - d.started_at)}` : ""}` : "cohortsync";
    if (view.cohortId === null) renderTable();
    else renderCohort();
  }

  // --- the address bar keeps the filter and sort, so a view can be linked -------------------------
  function loadQuery() {
    const q = new URLSearchParams(location.search);
    view.filter = q.get("status") || "all";
    view.search = q.get("q") || "";
    const sort = q.get("sort");
    if (sort && COLUMNS.some((c) => c.key === sort && c.sort)) view.sort = { key: sort, dir: q.get("dir") === "desc" ? -1 : 1 };
    $("search").value = view.search;
  }
  function saveQuery() {
    const q = new URLSearchParams();
    if (view.filter !== "all") q.set("status", view.filter);
    if (view.search) q.set("q", view.search);
    if (view.sort.key !== "status" || view.sort.dir !== 1) { q.set("sort", view.sort.key); q.set("dir", view.sort.dir > 0 ? "asc" : "desc"); }
    const text = q.toString();
    history.replaceState(null, "", location.pathname + (text ? `?${text}` : ""));
  }

  function start() {
    const m = location.pathname.match(/^\/cohorts\/([^/]+)\/?$/);
    view.cohortId = m ? decodeURIComponent(m[1]) : null;
    $("overview-view").hidden = view.cohortId !== null;
    $("cohort-view").hidden = view.cohortId === null;
    if (view.cohortId === null) {
      loadQuery();
      renderHead();
      $("search").addEventListener("input", (e) => { view.search = e.target.value; saveQuery(); renderTable(); });
      $("cohorts-body").addEventListener("click", (e) => {
        const b = e.target.closest("button[data-cohort]");
        if (b) trigger(b.dataset.cohort, b);
      });
    } else {
      $("reconcile-one").addEventListener("click", (e) => trigger(view.cohortId, e.currentTarget));
      window.addEventListener("resize", () => { if (view.cohort) renderCharts(view.cohort); });
    }
    $("reconcile-all").addEventListener("click", (e) => trigger(null, e.currentTarget));
    $("forget-token").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); tokenButton(); toast("Token forgotten."); });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
    tokenButton();
    setInterval(tick, 1000);
    poll();
  }
  start();
})();
