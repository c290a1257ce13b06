// The dashboard page: asks /api/state every second and draws it (tables, and SVG charts drawn here).
// Text goes in with textContent only: nothing from the job is ever parsed as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 1000;
let kind = null;
let latest = null;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function put(id, text) { const node = $(id); if (node) node.textContent = text === null || text === undefined ? "-" : String(text); }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
  return h ? `${h}:${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}` : `${m}:${String(s).padStart(2, "0")}`;
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function clock(unix) { return unix ? new Date(unix * 1000).toLocaleTimeString() : "-"; }
function date(unix) { return unix ? new Date(unix * 1000).toLocaleString() : "-"; }

// Tags take colours from a palette without red, which marks failures.
const PALETTE = ["#3b82f6", "#14b8a6", "#a855f7", "#f59e0b", "#22a06b", "#0ea5e9", "#6366f1", "#84cc16"];

function colour(tag) {
  if (!tag) return "#9aa3b2";
  let h = 0;
  for (const c of tag) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function bar(parts, total) {
  const node = el("div", {class: "bar"});
  for (const [name, count] of parts) {
    if (!count || !total) continue;
    const span = el("span", {class: name, title: `${name}: ${count}`});
    span.style.width = `${(100 * count / total).toFixed(2)}%`;
    node.appendChild(span);
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function row(cells, attrs) {
  const tr = el("tr", attrs);
  for (const cell of cells) {
    if (cell instanceof Node) { const td = el("td"); td.appendChild(cell); tr.appendChild(td); }
    else tr.appendChild(el("td", typeof cell === "number" ? {class: "num"} : {}, cell === null || cell === undefined ? "-" : cell));
  }
  return tr;
}

// ------------------------------------------------------------------ pages

function showPage() {
  let page = location.hash.slice(1) || (kind === "journal" ? "journal" : "overview");
  const allowed = [...document.querySelectorAll("#nav a")].filter(a => a.dataset.kind === kind).map(a => a.dataset.page);
  if (kind && !allowed.includes(page)) page = allowed[0];
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("hidden", kind !== null && a.dataset.kind !== kind);
    a.classList.toggle("active", a.dataset.page === page);
  }
  for (const section of document.querySelectorAll(".page")) section.classList.toggle("active", section.id === `page-${page}`);
  document.body.dataset.page = page;
}

function drawLive(s) {
  const r = s.report, t = r.tasks;
  put("label", s.label);
  put("host", `${s.host || "-"} (${s.address})`);
  put("uptime", duration(r.elapsed_seconds));
  put("slave-count", r.slaves);
  put("rate", `${r.throughput_per_second} tasks/s`);
  put("eta", s.eta_seconds === null ? "-" : duration(s.eta_seconds));
  for (const name of ["requested", "waiting", "running", "finished", "failed", "retrieved"]) put(`count-${name}`, t[name]);
  $("progress").replaceChildren(bar([["finished", t.retrieved], ["answered", t.results_waiting],
                                     ["running", t.running], ["waiting", t.waiting]], t.requested));
  const state = $("state");
  state.textContent = s.ended ? `master gone: ${s.ended}` : r.terminated ? "job ended" : `live, ${clock(s.now)}`;
  state.classList.toggle("ended", Boolean(s.ended || r.terminated));

  fill($("tags").tBodies[0], Object.entries(s.tags).map(([tag, c]) => {
    const total = c.waiting + c.running + c.finished + c.failed;
    return row([tag, c.waiting, c.running, c.finished, c.failed,
                bar([["finished", c.finished], ["failed", c.failed], ["running", c.running], ["waiting", c.waiting]], total)],
               {"data-tag": tag});
  }));
  drawThroughput(s.throughput);
  drawStream(s);
  drawSlaves(s);
  drawFailures($("failures"), s.failures, s.show_values);
  $("failures-note").textContent = `${t.failed} task(s) failed` +
    (s.failures.length < t.failed ? `; the last ${s.failures.length}, which the master keeps:` : ":");
  fill($("events"), s.events.slice().reverse().map(e => el("li", {class: e.kind}, `${clock(e.time)}  ${e.text}`)));
}

function drawThroughput(points) {
  const svg = $("throughput");
  const W = Math.max(400, svg.getBoundingClientRect().width - 2 || 800), H = 160;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);   // at the page's own scale: text is not stretched
  const rates = [];
  for (let i = 1; i < points.length; i++) {
    const dt = points[i][0] - points[i - 1][0];
    if (dt > 0) rates.push([points[i][0], (points[i][1] - points[i - 1][1]) / dt]);
  }
  const nodes = [];
  if (rates.length > 1) {
    const t0 = rates[0][0], t1 = rates[rates.length - 1][0];
    const top = Math.max(1, ...rates.map(p => p[1]));
    const x = tt => (t1 > t0 ? (tt - t0) / (t1 - t0) : 0) * (W - 10) + 5;
    const y = v => H - 14 - (v / top) * (H - 28);
    nodes.push(el("svg:polyline", {points: rates.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
                                   fill: "none", stroke: "#3b82f6", "stroke-width": 2, "vector-effect": "non-scaling-stroke"}));
    nodes.push(el("svg:text", {x: 6, y: 12, "font-size": 11, fill: "#6b7280"}, `${top.toFixed(1)}/s`));
  } else {
    nodes.push(el("svg:text", {x: 10, y: 24, "font-size": 13, fill: "#6b7280"}, "collecting (one point a second while the page is open)"));
  }
  svg.replaceChildren(...nodes);
}

function drawStream(s) {
  const svg = $("stream");
  const slaves = s.slaves.map(p => p.id);
  for (const g of s.gone) if (!slaves.includes(g.id)) slaves.push(g.id);
  for (const span of s.stream) if (!slaves.includes(span.slave)) slaves.push(span.slave);
  const rowH = 22, left = 110, W = Math.max(400, svg.getBoundingClientRect().width - 2 || 1000), H = Math.max(60, slaves.length * rowH + 24);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);   // drawn at the page's own scale: text is not stretched
  svg.style.height = `${H + 2}px`;   // and its 1px borders
  // The last 5 minutes at most, 20 seconds at least, from the oldest task shown.
  const t1 = s.now, t0 = Math.max(t1 - 300, Math.min(t1 - 20, ...s.stream.map(p => p.start - 1)));
  const x = tt => left + Math.max(0, (tt - t0) / (t1 - t0)) * (W - left - 5);
  const nodes = [];
  slaves.forEach((id, i) => {
    const gone = s.gone.find(g => g.id === id && !s.slaves.some(p => p.id === id));
    nodes.push(el("svg:text", {x: 4, y: i * rowH + 15, "font-size": 11, fill: gone ? "#d64545" : "#1d2330"},
                  `slave ${id}${gone ? " (" + gone.verdict + ")" : ""}`));
  });
  const tags = new Set();
  for (const span of s.stream) {
    const i = slaves.indexOf(span.slave);
    const end = span.end === null ? t1 : span.end;
    if (end < t0) continue;
    tags.add(span.tag);
    const a = x(Math.max(span.start, t0)), b = Math.max(a + 2, x(end));
    const rect = el("svg:rect", {x: a.toFixed(1), y: i * rowH + 3, width: (b - a).toFixed(1), height: rowH - 6,
                                 fill: colour(span.tag), "fill-opacity": span.count ? 0.45 : 0.9,
                                 stroke: span.failed || span.lost ? "#d64545" : "none", "stroke-width": 2,
                                 class: span.failed ? "failed" : span.lost ? "lost" : "task",
                                 "data-tag": span.tag, "data-slave": span.slave});
    rect.appendChild(el("svg:title", {}, span.count ? `${span.count} short task(s)` :
      `${span.task_id} (${span.tag}) ${span.end === null ? "running" : (span.failed ? "failed" : span.lost ? "its slave was lost" : "done")}`));
    nodes.push(rect);
  }
  nodes.push(el("svg:text", {x: left, y: H - 4, "font-size": 10, fill: "#6b7280"}, clock(t0)));
  nodes.push(el("svg:text", {x: W - 5, y: H - 4, "font-size": 10, fill: "#6b7280", "text-anchor": "end"}, clock(t1)));
  svg.replaceChildren(...nodes);
  $("stream-legend").replaceChildren(...[...tags].map(tag => {
    const span = el("span", {}, tag || "short tasks");
    const box = el("i");
    box.style.background = colour(tag);
    span.prepend(box);
    return span;
  }));
}

function drawSlaves(s) {
  fill($("slaves").tBodies[0], s.slaves.map(p => {
    const task = p.running[0];
    return row([p.id, p.role, p.host, p.agent, p.slurm_job, p.pid,
                p.cpu_percent === null ? null : p.cpu_percent, bytes(p.rss_bytes),
                p.seconds_since_heartbeat === null ? null : `${p.seconds_since_heartbeat.toFixed(1)} s`,
                task ? `${task.task_id} (${task.tag})` : null, task ? duration(task.seconds) : null, p.tasks_done],
               {"data-pid": p.pid, "data-id": p.id});
  }));
  fill($("gone").tBodies[0], s.gone.slice().reverse().map(g =>
    row([g.id, g.role, g.host, g.pid, g.tasks_done, g.verdict, clock(g.gone_at)],
        {"data-pid": g.pid, "data-verdict": g.verdict, class: g.verdict === "left" ? "" : "lost"})));
}

function drawFailures(box, failures, showValues) {
  box.replaceChildren(...(failures || []).slice().reverse().map(f => {
    const div = el("div", {class: "failure", "data-task": f.task_id});
    div.appendChild(el("strong", {}, `${f.task_id} (${f.tag})`));
    if (f.run !== undefined) div.appendChild(el("span", {class: "note"}, `  run ${f.run}`));
    if (f.slave !== undefined) div.appendChild(el("span", {class: "note"}, f.slave === null ? "  resumed from the journal"
      : `  slave ${f.slave}` + (f.pid ? ` (PID ${f.pid} on ${f.host})` : "")));
    if (f.time) div.appendChild(el("span", {class: "note"}, `  ${clock(f.time)}`));
    if (showValues && f.parameters !== undefined) {
      div.appendChild(el("div", {}, `parameters: ${f.parameters}`));
      div.appendChild(el("div", {}, `exception: ${f.exception}`));
    }
    div.appendChild(el("pre", {}, f.traceback || "(no traceback)"));
    return div;
  }));
}

function drawJournal(s) {
  put("label", s.label);
  put("journal-path", s.journal);
  put("journal-master", s.master_running ? "running" : (s.tasks.not_answered ? "not running (run the job again to resume it)" : "not running; every task journaled is answered"));
  for (const name of ["requested", "finished", "failed"]) put(`journal-${name}`, s.tasks[name]);
  put("journal-not-answered", s.tasks.not_answered);
  const state = $("state");
  state.textContent = `journal, read ${clock(s.now)}`;
  fill($("journal-tags").tBodies[0], Object.entries(s.tags).map(([tag, c]) =>
    row([tag, c.requested, c.finished, c.failed, c.not_answered,
         bar([["finished", c.finished], ["failed", c.failed], ["waiting", c.not_answered]], c.requested)],
        {"data-tag": tag})));
  fill($("runs").tBodies[0], s.runs.map(r =>
    row([r.run, r.pid, r.host, date(r.started), r.ended ? date(r.ended) : r.state,
         `${r.resumed} answer(s)`, r.answered,
         Object.entries(r.requested).map(([tag, n]) => `${tag}: ${n}`).join(", ") || "-"],
        {"data-run": r.run, "data-state": r.state, class: r.state.startsWith("killed") ? "lost" : ""})));
  drawFailures($("journal-failures"), s.failures, s.show_values);
}

// ------------------------------------------------------------------ refresh

async function refresh() {
  try {
    const answer = await fetch("api/state", {credentials: "same-origin", cache: "no-store"});
    if (!answer.ok) throw new Error(`${answer.status} ${await answer.text()}`);
    latest = await answer.json();
    if (kind !== latest.kind) { kind = latest.kind; showPage(); }
    draw();
    document.body.dataset.updated = String(latest.now);
  } catch (error) {
    const state = $("state");
    state.textContent = `cannot reach the dashboard: ${error.message}`;
    state.classList.add("ended");
  }
}

function draw() {
  if (latest === null) return;
  if (kind === "journal") drawJournal(latest); else drawLive(latest);
}

// Charts are sized from the page they are on: draw again once it shows.
window.addEventListener("hashchange", () => { showPage(); draw(); });
window.addEventListener("DOMContentLoaded", () => {
  // The token came in the URL; the cookie set with the page now carries it: drop it from the address bar.
  if (location.search) history.replaceState(null, "", location.pathname + location.hash);
  showPage();
  refresh();
  setInterval(refresh, REFRESH_MS);
});
