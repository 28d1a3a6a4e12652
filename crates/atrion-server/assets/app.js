// The Atrion decision dashboard. No framework and no build step: the sidecar serves this
// file as it is. Live data comes from `GET /v1/dashboard/stream` (server-sent events);
// charts are SVG drawn by the server. Admin actions use the API with the token kept in
// sessionStorage (this tab only). When the server puts the dashboard's data behind a token
// (`--dashboard-auth`), the page reads the feed with fetch and that token in the
// Authorization header (an EventSource cannot send one); a token never goes in a URL.
"use strict";

const PAGE = 50;
const SPARK = 120;
const TOKEN_KEY = "atrion.admin-token";

const state = {
  routes: new Map(), // route -> row (+ spark, flashUntil)
  order: [], // routes after filter and sort
  nodes: [],
  policy: null,
  node: "",
  everyMs: 1000,
  lastAt: 0,
  lastSeen: 0,
  degraded: false,
  feedNeedsToken: false, // the server asked for a token: the feed and charts are fetched with it
  sort: { key: "shed_ratio", dir: -1 },
  filter: "",
  mode: "",
  page: 0,
  view: "routes",
  route: null,
  clockMs: 0,
  total: 0,
};

// What the browser tests read: updates received and the time each render took (ms).
const stats = { updates: 0, renders: 0, renderMs: [], lastRenderMs: 0, rows: 0 };
window.atrionStats = stats;

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

const fmt = (v, digits = 1) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(digits));
const pct = (v) => (v > 0 ? (v * 100 < 1 ? "<1%" : Math.round(v * 100) + "%") : "0%");
const modeName = (m) => (m === "half_open" ? "half-open" : m);
function ago(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s ago";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
}
function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
const when = (ms) => new Date(ms).toLocaleString();

// ---------------------------------------------------------------- live feed

let source = null;
let feed = null; // the AbortController of a feed read with fetch
let staleTimer = 0;
let connectTimer = 0;

// The Authorization header, when a token is set.
function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

function connect() {
  clearTimeout(connectTimer);
  if (source) source.close();
  source = null;
  if (feed) feed.abort();
  feed = null;
  setConn("connecting", "connecting…");
  // Behind a token, the feed is read with fetch; otherwise by the browser's EventSource.
  if (state.feedNeedsToken) {
    readFeed();
    return;
  }
  const es = new EventSource("/v1/dashboard/stream");
  source = es;
  es.addEventListener("update", (e) => onUpdate(JSON.parse(e.data)));
  es.onopen = () => setConn("live", "live");
  es.onerror = () => {
    setConn("connecting", "reconnecting…");
    // A refused connection is retried by the browser; a closed source (an answer that is
    // not a feed: a token needed, too many pages open) is not: fetch says which it was.
    if (es.readyState === EventSource.CLOSED && source === es) {
      source = null;
      readFeed();
    }
  };
}

function reconnect(ms) {
  clearTimeout(connectTimer);
  connectTimer = setTimeout(connect, ms);
}

// The feed read with fetch: the token in a header, the events parsed here.
async function readFeed() {
  const ctl = new AbortController();
  feed = ctl;
  let res;
  try {
    res = await fetch("/v1/dashboard/stream", { headers: authHeaders(), signal: ctl.signal, cache: "no-store" });
  } catch (e) {
    if (feed === ctl) reconnect(2000);
    return;
  }
  if (res.status === 401 || res.status === 403) {
    state.feedNeedsToken = true;
    feed = null;
    setConn("stale", "token needed");
    // It waits for a token: setting one reconnects.
    if (!$("#token-dialog").open) $("#token-button").click();
    return;
  }
  if (!res.ok || !res.body) {
    const wait = Number(res.headers.get("Retry-After")) || 2;
    setConn("connecting", "reconnecting…");
    if (feed === ctl) reconnect(wait * 1000);
    return;
  }
  setConn("live", "live");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const from = Math.max(0, buf.length - 1);
      buf += value;
      let end = buf.indexOf("\n\n", from);
      while (end >= 0) {
        onEvent(buf.slice(0, end));
        buf = buf.slice(end + 2);
        end = buf.indexOf("\n\n");
      }
    }
  } catch (e) {
    // The server went away, or the feed was aborted.
  }
  if (feed === ctl) {
    setConn("connecting", "reconnecting…");
    reconnect(1000);
  }
}

// One server-sent event: its `update` data, if it is one.
function onEvent(text) {
  let type = "message";
  const data = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
  }
  if (type === "update" && data.length) onUpdate(JSON.parse(data.join("\n")));
}

function setConn(kind, text) {
  const c = $("#conn");
  c.className = "conn " + kind;
  c.textContent = text;
}

function onUpdate(u) {
  stats.updates++;
  state.node = u.node;
  state.everyMs = u.every_ms || 1000;
  state.lastAt = u.at_ms;
  state.lastSeen = Date.now();
  state.degraded = u.degraded;
  state.nodes = u.nodes || [];
  state.policy = u.policy;
  state.total = u.routes_total;
  state.clockMs = u.clock_ms;
  const now = performance.now();
  const seen = new Set();
  for (const r of u.routes) {
    seen.add(r.route);
    const old = state.routes.get(r.route);
    if (r.spark) {
      r.spark = r.spark.slice(-SPARK);
    } else {
      r.spark = old ? old.spark : [];
      pushSpark(r);
    }
    r.flashUntil = old && old.mode !== r.mode ? now + 2000 : old ? old.flashUntil : 0;
    r.load = r.break_point > 0 ? r.resistance / r.break_point : 0;
    state.routes.set(r.route, r);
  }
  if (u.full) {
    // Every route is in a full update: the others are gone.
    for (const k of [...state.routes.keys()]) if (!seen.has(k)) state.routes.delete(k);
  } else {
    // A route left out of a delta is as it was: its sparkline takes its resistance again.
    for (const [k, r] of state.routes) {
      if (!seen.has(k)) pushSpark(r);
    }
    for (const k of u.removed || []) state.routes.delete(k);
  }
  setConn(u.degraded ? "stale" : "live", u.degraded ? "live, store away" : "live");
  clearTimeout(staleTimer);
  staleTimer = setTimeout(() => setConn("stale", "no updates"), Math.max(3000, state.everyMs * 3));
  $("#node-id").textContent = "node " + u.node;
  const alerts = u.policy ? u.policy.alerts.length : 0;
  $("#alert-count").hidden = alerts === 0;
  $("#alert-count").textContent = alerts;
  schedule();
}

// A route's sparkline takes its resistance now, keeping the last SPARK points.
function pushSpark(r) {
  r.spark.push(r.resistance);
  if (r.spark.length > SPARK) r.spark.splice(0, r.spark.length - SPARK);
}

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    const t0 = performance.now();
    if (state.view === "routes") renderRoutes();
    else if (state.view === "nodes") renderNodes();
    const dt = performance.now() - t0;
    stats.renders++;
    stats.lastRenderMs = dt;
    stats.renderMs.push(dt);
    if (stats.renderMs.length > 200) stats.renderMs.shift();
  });
}

// ---------------------------------------------------------------- routes table

const SHEDDING = new Set(["open", "half_open"]);
const MODE_RANK = { open: 0, half_open: 1, operational: 2, bootstrap: 3 };

function applyOrder() {
  const f = state.filter.toLowerCase();
  const m = state.mode;
  const rows = [];
  for (const r of state.routes.values()) {
    if (f && !r.route.toLowerCase().includes(f) && !(r.policy || "").toLowerCase().includes(f)) continue;
    if (m === "shedding" ? !(SHEDDING.has(r.mode) || r.shed_ratio > 0) : m && r.mode !== m) continue;
    rows.push(r);
  }
  const { key, dir } = state.sort;
  rows.sort((a, b) => {
    let x = a[key];
    let y = b[key];
    if (key === "mode") {
      x = MODE_RANK[x];
      y = MODE_RANK[y];
    }
    if (key === "route") return dir * a.route.localeCompare(b.route);
    if (x === y) return a.route.localeCompare(b.route);
    return dir * (x < y ? -1 : 1);
  });
  state.order = rows;
}

let bodyRows = null;
function tableRows() {
  if (bodyRows) return bodyRows;
  const tbody = $("#routes tbody");
  bodyRows = [];
  for (let i = 0; i < PAGE; i++) {
    const link = el("a", { href: "#" });
    const mode = el("span", { class: "mode" });
    const since = el("span", { class: "since" });
    const held = el("span", { class: "held" });
    const meter = el("i");
    const loadText = el("span");
    const shed = el("span");
    const shedBy = el("span", { class: "shed-by" });
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 " + SPARK + " 100");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("x1", "0");
    line.setAttribute("x2", String(SPARK));
    const poly = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    svg.append(line, poly);
    const tds = [
      el("td", {}, link),
      el("td", {}, mode, since, held),
      el("td", { class: "num" }, el("span", { class: "load" }, el("span", { class: "meter" }, meter), loadText)),
      el("td", { class: "num" }),
      el("td", { class: "num opt" }),
      el("td", { class: "num" }),
      el("td", { class: "num" }, shed, el("br"), shedBy),
      el("td", { class: "opt" }, svg),
    ];
    const tr = el("tr", { class: "empty" }, ...tds);
    tr.hidden = true;
    tbody.append(tr);
    bodyRows.push({ tr, tds, link, mode, since, held, meter, loadText, shed, shedBy, line, poly, route: null });
  }
  return bodyRows;
}

function renderRoutes() {
  applyOrder();
  const total = state.routes.size;
  const pages = Math.max(1, Math.ceil(state.order.length / PAGE));
  if (state.page >= pages) state.page = pages - 1;
  const start = state.page * PAGE;
  const shown = state.order.slice(start, start + PAGE);
  const now = performance.now();
  const rows = tableRows();
  let drawn = 0;
  rows.forEach((x, i) => {
    const r = shown[i];
    if (!r) {
      if (!x.tr.hidden) {
        x.tr.className = "empty";
        x.tr.hidden = true;
        x.route = null;
        delete x.tr.dataset.route;
      }
      return;
    }
    drawn++;
    x.tr.hidden = false;
    x.tr.dataset.route = r.route;
    x.tr.dataset.mode = r.mode;
    const flash = r.flashUntil > now;
    const cls = flash ? "flash" : "";
    if (x.route !== r.route || x.tr.className !== cls) x.tr.className = cls;
    if (x.route !== r.route) {
      x.route = r.route;
      x.link.textContent = r.route;
      x.link.title = r.route;
      x.link.href = "#/route/" + encodeURIComponent(r.route);
    }
    x.mode.className = "mode " + r.mode;
    x.mode.textContent = modeName(r.mode);
    x.since.textContent = r.mode_since_ms !== null && r.mode_since_ms !== undefined ? span(state.clockMs - r.mode_since_ms) : "";
    const hold = r.held && r.held !== "released" ? r.held : "";
    x.held.textContent = hold;
    x.held.hidden = !hold;
    x.meter.style.width = Math.min(100, r.load * 100) + "%";
    x.meter.className = r.load >= 1 ? "over" : r.load >= 0.8 ? "hot" : "";
    x.loadText.textContent = fmt(r.resistance) + " / " + fmt(r.break_point);
    x.tds[3].textContent = fmt(r.scar);
    x.tds[4].textContent = fmt(r.momentum, 2);
    x.tds[5].textContent = fmt(r.rate, 0);
    x.shed.textContent = pct(r.shed_ratio);
    x.shedBy.textContent = Object.entries(r.shed_by)
      .map(([k, v]) => k + " " + pct(v))
      .join(", ");
    drawSpark(x, r);
  });
  stats.rows = drawn;
  const open = [...state.routes.values()].filter((r) => r.mode === "open").length;
  const past = state.total > total ? " (of " + state.total + " tracked: the dashboard follows the first " + total + ")" : "";
  $("#summary").textContent =
    total + " routes" + past + " · " + open + " open" + (state.order.length !== total ? " · " + state.order.length + " shown" : "");
  $("#page-info").textContent = "page " + (state.page + 1) + " of " + pages;
  $("#prev").disabled = state.page === 0;
  $("#next").disabled = state.page >= pages - 1;
  for (const th of document.querySelectorAll("#routes th[data-key]")) {
    th.setAttribute("aria-sort", th.dataset.key === state.sort.key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

function drawSpark(x, r) {
  const s = r.spark;
  const top = Math.max(r.break_point, ...s, 1) * 1.1;
  const off = SPARK - s.length;
  let pts = "";
  for (let i = 0; i < s.length; i++) pts += off + i + "," + (100 - (s[i] / top) * 100).toFixed(1) + " ";
  x.poly.setAttribute("points", pts);
  const y = (100 - (r.break_point / top) * 100).toFixed(1);
  x.line.setAttribute("y1", y);
  x.line.setAttribute("y2", y);
}

// ---------------------------------------------------------------- nodes

function renderNodes() {
  const tbody = $("#nodes tbody");
  const rows = state.nodes.map((n) => {
    const status = n.this_node && state.degraded ? "degraded" : n.status;
    const tr = el(
      "tr",
      { class: "node-" + n.status, "data-node": n.id, "data-status": n.status },
      el("td", { text: n.id + (n.this_node ? " (this node)" : "") }),
      el("td", {}, el("span", { class: "status " + n.status, text: status })),
      el("td", { text: ago(state.lastAt - n.last_seen_ms) }),
      el("td", { class: "num", text: n.sync_lag_ms === null ? "–" : n.sync_lag_ms + " ms" }),
      el("td", { text: n.policy_version === null || n.policy_version === undefined ? "–" : "v" + n.policy_version }),
      el("td", { text: n.version || "–" }),
    );
    return tr;
  });
  tbody.replaceChildren(...rows);
}

// ---------------------------------------------------------------- a route's page

let routeTimer = 0;

async function loadRoute() {
  const route = state.route;
  if (route === null || state.view !== "route") return;
  const enc = encodeURIComponent(route);
  let d;
  try {
    const res = await fetch("/v1/dashboard/routes/" + enc, { headers: authHeaders() });
    if (!res.ok) {
      const p = await problem(res);
      $("#route-cards").replaceChildren(el("p", { class: "result err", text: p }));
      return;
    }
    d = await res.json();
  } catch (e) {
    return; // the server is away; the next tick tries again
  }
  if (route !== state.route) return;
  const v = d.route;
  const card = (label, value, attrs = {}) => el("div", { class: "card", ...attrs }, el("b", { text: label }), el("span", { text: value }));
  const mode = el("div", { class: "card", id: "route-mode", "data-mode": v.mode }, el("b", { text: "Mode" }), el("span", { class: "mode " + v.mode, text: modeName(v.mode) }));
  $("#route-cards").replaceChildren(
    mode,
    card("Resistance", fmt(v.resistance) + " Ω"),
    card("Break point", fmt(v.break_point) + " Ω"),
    card("Scar", fmt(v.scar) + " Ω"),
    card("Momentum", fmt(v.momentum, 2)),
    card("Tuner mean ± deviation", fmt(v.tuner_mean) + " ± " + fmt(v.tuner_sd)),
    card("Decisions/s", fmt(d.rate, 0)),
    card("Shed", pct(d.shed_ratio) + (Object.keys(d.shed_by).length ? " (" + Object.entries(d.shed_by).map(([k, x]) => k + " " + pct(x)).join(", ") + ")" : "")),
    card("Hold", v.held, { id: "route-held", "data-held": v.held }),
    card("Policy", v.policy || "defaults"),
    card("Cluster scar", v.cluster_scar === null ? "–" : fmt(v.cluster_scar) + " Ω"),
    card("Reports absorbed", String(v.updates)),
  );
  $("#transitions").replaceChildren(
    ...(d.transitions.length
      ? d.transitions.map((t) =>
          el("tr", {}, el("td", { text: ago(t.ago_ms) }), el("td", {}, el("span", { class: "mode " + t.from, text: modeName(t.from) })), el("td", {}, el("span", { class: "mode " + t.to, text: modeName(t.to) })), el("td", { class: "num", text: fmt(t.resistance) })),
        )
      : [el("tr", {}, el("td", { colspan: "4", text: "none yet" }))]),
  );
  $("#decisions").replaceChildren(
    ...d.decisions.map((x) =>
      el("tr", {}, el("td", { text: ago(x.ago_ms) }), el("td", { text: x.verdict }), el("td", { text: x.reason }), el("td", { text: modeName(x.mode) }), el("td", { class: "num", text: fmt(x.resistance) })),
    ),
  );
  $("#route-nodes").replaceChildren(
    ...(v.nodes.length
      ? v.nodes.map((n) => el("tr", {}, el("td", { text: n.node }), el("td", { class: "num", text: fmt(n.scar) }), el("td", { class: "num", text: fmt(n.momentum, 2) }), el("td", { text: when(n.at_ms) })))
      : [el("tr", {}, el("td", { colspan: "4", text: "no other node reports on this route" }))]),
  );
  for (const kind of ["resistance", "tuner"]) swapChart(kind, enc);
}

// The next chart loads off-screen, then replaces the shown one: no flicker, no jump.
// Behind a token, an image cannot send it: the chart is fetched, and shown from a blob.
function swapChart(kind, enc) {
  const img = $("#chart-" + kind);
  const url = "/v1/dashboard/routes/" + enc + "/chart.svg?kind=" + kind + "&t=" + Date.now();
  if (!state.feedNeedsToken) {
    const next = new Image();
    next.onload = () => {
      if (state.view === "route") img.src = next.src;
    };
    next.src = url;
    return;
  }
  fetch(url, { headers: authHeaders() })
    .then((res) => (res.ok ? res.blob() : null))
    .then((blob) => {
      if (!blob || state.view !== "route") return;
      const old = img.src;
      img.src = URL.createObjectURL(blob);
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    })
    .catch(() => {}); // the server is away; the next tick tries again
}

// ---------------------------------------------------------------- policies

let policyTimer = 0;

async function loadPolicies() {
  if (state.view !== "policies") return;
  const status = $("#policies-status");
  let dump;
  try {
    const res = await fetch("/v1/state");
    if (res.status === 404) {
      status.textContent = "This server runs without the policy layer.";
      return;
    }
    if (!res.ok) {
      status.className = "result err";
      status.textContent = await problem(res);
      return;
    }
    dump = await res.json();
  } catch (e) {
    return;
  }
  status.className = "result";
  status.textContent = dump.stale ? "The store cannot be reached: this is what this node last knew." : "";
  $("#alerts").replaceChildren(
    ...dump.alerts.map((a) => el("div", { class: "alert", role: "alert", text: a.node + ": " + a.class + " since " + when(a.since_ms) + " (runs v" + a.current + ", desired v" + a.desired + "): " + a.message })),
  );
  const d = dump.desired;
  $("#desired-version").textContent = "v" + d.version + (d.updated_by ? " by " + d.updated_by + ", " + when(d.updated_ms) : "");
  const policies = [];
  for (const layer of ["api", "file"]) {
    for (const p of d[layer].policies) {
      const del = el("button", { type: "button", class: "danger", text: "Remove" });
      if (layer === "api") del.addEventListener("click", () => act("remove the policy on " + p.route, "DELETE", "/v1/policies?route=" + encodeURIComponent(p.route)));
      else del.disabled = true;
      policies.push(el("tr", {}, el("td", { text: p.route }), el("td", { text: layer }), el("td", { text: p.state || "–" }), el("td", {}, el("code", { class: "json", text: p.physics ? JSON.stringify(p.physics) : "–" })), el("td", { text: p.note || "" }), el("td", {}, del)));
    }
  }
  $("#policies").replaceChildren(...(policies.length ? policies : [el("tr", {}, el("td", { colspan: "6", text: "no policies: every route runs the node's defaults" }))]));
  const bans = [];
  for (const layer of ["api", "file"]) {
    for (const b of d[layer].bans) {
      const target = "route=" + (b.route || "*") + " client=" + (b.client || "*");
      const lift = el("button", { type: "button", text: "Lift" });
      const q = new URLSearchParams();
      if (b.route) q.set("route", b.route);
      if (b.client) q.set("client", b.client);
      if (layer === "api") lift.addEventListener("click", () => act("lift the ban " + target, "DELETE", "/v1/bans?" + q));
      else lift.disabled = true;
      bans.push(el("tr", {}, el("td", { text: target }), el("td", { text: when(b.until_ms) }), el("td", { text: b.until_ms > Date.now() ? span(b.until_ms - Date.now()) : "expired" }), el("td", { text: b.reason || "" }), el("td", {}, lift)));
    }
  }
  $("#bans").replaceChildren(...(bans.length ? bans : [el("tr", {}, el("td", { colspan: "5", text: "no bans" }))]));
  $("#current").replaceChildren(
    ...dump.current.map((r) => el("tr", { class: r.version === d.version ? "" : "node-suspect" }, el("td", { text: r.node }), el("td", { text: "v" + r.version }), el("td", { text: r.version === d.version ? "yes" : "no" }), el("td", { text: r.applied_ms ? when(r.applied_ms) : "–" }), el("td", { text: r.error ? JSON.stringify(r.error) : "" }))),
  );
  try {
    const h = await (await fetch("/v1/state/history?limit=20")).json();
    $("#history").replaceChildren(
      ...h.entries.map((e) => el("tr", {}, el("td", { text: when(e.at_ms) }), el("td", { text: "v" + e.version }), el("td", { text: e.node }), el("td", { text: e.changes.map((c) => (c.from ? (c.to ? "changed " : "removed ") : "added ") + c.target).join("; ") }))),
    );
  } catch (e) {
    /* the next refresh tries again */
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    $("#audit").replaceChildren(el("tr", {}, el("td", { colspan: "6", text: "Enter the admin token to read the audit log." })));
    return;
  }
  try {
    const res = await fetch("/v1/audit?limit=20", { headers: { Authorization: "Bearer " + token } });
    if (!res.ok) {
      $("#audit").replaceChildren(el("tr", {}, el("td", { colspan: "6", text: await problem(res) })));
      return;
    }
    const a = await res.json();
    $("#audit").replaceChildren(
      ...a.entries.map((e) => el("tr", {}, el("td", { text: when(e.at_ms) }), el("td", { text: e.who }), el("td", { text: e.action }), el("td", { text: e.target || "" }), el("td", { text: e.ok ? "done" : "refused: " + (e.error || "") }), el("td", { text: e.node }))),
    );
  } catch (e) {
    /* the next refresh tries again */
  }
}

// ---------------------------------------------------------------- actions

async function problem(res) {
  try {
    const p = await res.json();
    return res.status + " " + (p.title || "") + (p.detail ? ": " + p.detail : "") + (p.issues ? " " + p.issues.map((i) => i.field + ": " + i.message).join("; ") : "");
  } catch (e) {
    return res.status + " " + res.statusText;
  }
}

function confirmAction(text) {
  const dlg = $("#confirm");
  $("#confirm-text").textContent = "Really " + text + "?";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.returnValue = "";
    dlg.showModal();
    $("#confirm-ok").focus();
  });
}

function toast(text, ok) {
  const t = $("#toast");
  t.textContent = text;
  t.className = "toast" + (ok ? "" : " err");
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

// Asks, sends, and shows the answer (in the toast, and on the route's page).
async function act(text, method, path, body) {
  if (!(await confirmAction(text))) return false;
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  let msg;
  let ok = false;
  try {
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    ok = res.ok;
    msg = ok ? "Done: " + text + "." : "Refused: " + (await problem(res)) + (res.status === 401 || res.status === 403 ? " (set the admin token)" : "");
  } catch (e) {
    msg = "The server cannot be reached: " + e.message;
  }
  const out = $("#action-result");
  out.textContent = msg;
  out.className = "result " + (ok ? "ok" : "err");
  out.dataset.ok = String(ok);
  toast(msg, ok);
  if (state.view === "route") loadRoute();
  if (state.view === "policies") loadPolicies();
  return ok;
}

function routeAction(kind) {
  const route = state.route;
  const r = { route };
  switch (kind) {
    case "open":
      return act("hold " + route + " open (shed every request)", "POST", "/v1/admin/open", r);
    case "close":
      return act("hold " + route + " closed (admit every request)", "POST", "/v1/admin/close", r);
    case "release":
      return act("release the hold on " + route, "POST", "/v1/admin/release", r);
    case "reset":
      return act("reset " + route + " (scar, mode and tuner start over)", "POST", "/v1/admin/reset", r);
    case "shadow":
      return act("run " + route + " in shadow mode on every node (nothing shed)", "POST", "/v1/policies", { route, state: "shadow", note: "from the dashboard" });
    case "unshadow":
      return act("remove the policy on " + route + " (end shadow mode)", "DELETE", "/v1/policies?route=" + encodeURIComponent(route));
    case "ban": {
      const minutes = Math.max(1, Math.min(10080, Number($("#ban-minutes").value) || 5));
      return act("ban " + route + " on every node for " + minutes + " min", "POST", "/v1/bans", { route, for_ms: minutes * 60000, reason: "from the dashboard" });
    }
  }
  return Promise.resolve(false);
}

function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  const b = $("#token-button");
  b.classList.toggle("set", !!token);
  b.textContent = token ? "Admin token set" : "Admin token";
  // A feed waiting for a token tries again with this one.
  if (state.feedNeedsToken) connect();
}

// ---------------------------------------------------------------- navigation

function route() {
  const h = location.hash || "#/routes";
  clearInterval(routeTimer);
  clearInterval(policyTimer);
  let view = "routes";
  if (h.startsWith("#/route/")) {
    view = "route";
    state.route = decodeURIComponent(h.slice("#/route/".length));
  } else if (h === "#/nodes") view = "nodes";
  else if (h === "#/policies") view = "policies";
  state.view = view;
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === (view === "route" ? "routes" : view)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (view === "route") {
    $("#route-title").textContent = state.route;
    $("#action-result").textContent = "";
    document.title = state.route + " · Atrion";
    for (const kind of ["resistance", "tuner"]) $("#chart-" + kind).removeAttribute("src");
    loadRoute();
    routeTimer = setInterval(loadRoute, 2000);
  } else if (view === "policies") {
    document.title = "Policies · Atrion";
    loadPolicies();
    policyTimer = setInterval(loadPolicies, 3000);
  } else {
    document.title = (view === "nodes" ? "Nodes" : "Routes") + " · Atrion";
  }
  schedule();
}

function init() {
  for (const th of document.querySelectorAll("#routes th[data-key]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.key;
      state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: key === "route" || key === "mode" ? 1 : -1 };
      schedule();
    });
  }
  $("#filter").addEventListener("input", (e) => {
    state.filter = e.target.value;
    state.page = 0;
    schedule();
  });
  $("#mode-filter").addEventListener("change", (e) => {
    state.mode = e.target.value;
    state.page = 0;
    schedule();
  });
  $("#prev").addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    schedule();
  });
  $("#next").addEventListener("click", () => {
    state.page++;
    schedule();
  });
  for (const b of document.querySelectorAll("#route-actions button")) b.addEventListener("click", () => routeAction(b.dataset.act));
  $("#ban-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { for_ms: Math.max(1, Number(f.get("minutes")) || 10) * 60000 };
    if (f.get("route")) body.route = f.get("route");
    if (f.get("client")) body.client = f.get("client");
    if (f.get("reason")) body.reason = f.get("reason");
    act("ban route=" + (body.route || "*") + " client=" + (body.client || "*") + " on every node", "POST", "/v1/bans", body);
  });
  $("#token-button").addEventListener("click", () => {
    $("#token-input").value = "";
    $("#token-dialog").showModal();
  });
  $("#token-dialog").addEventListener("close", () => {
    const v = $("#token-dialog").returnValue;
    if (v === "save" && $("#token-input").value.trim()) setToken($("#token-input").value.trim());
    else if (v === "forget") setToken(null);
    if (state.view === "policies") loadPolicies();
  });
  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement;
    if (e.key === "/" && !typing) {
      e.preventDefault();
      location.hash = "#/routes";
      $("#filter").focus();
    } else if (e.key === "Escape" && state.view === "route" && !document.querySelector("dialog[open]")) {
      location.hash = "#/routes";
    } else if (!typing && state.view === "routes" && (e.key === "ArrowRight" || e.key === "ArrowLeft") && !e.altKey) {
      state.page = Math.max(0, state.page + (e.key === "ArrowRight" ? 1 : -1));
      schedule();
    }
  });
  window.addEventListener("hashchange", route);
  setToken(sessionStorage.getItem(TOKEN_KEY));
  route();
  connect();
  // Relative times on the nodes view move on between updates.
  setInterval(() => state.view === "nodes" && schedule(), 1000);
}

document.addEventListener("DOMContentLoaded", init);
