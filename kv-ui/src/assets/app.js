// kvtk ui: the page. Every piece of user data (keys, values, identities, metadata,
// configuration) reaches the DOM through textContent or setAttribute, never as HTML.
"use strict";

const VIEWS = ["locks", "elections", "members", "config", "buckets"];
const state = { items: {}, status: {}, meta: null, offset: 0, view: "locks", openLocks: new Set(), doc: null };
for (const v of VIEWS) state.items[v] = new Map();

// The secret comes in the URL's fragment (never sent to the server) or is typed in the
// confirmation; it is kept for this tab only.
(function takeSecret() {
  const m = /(?:^#|&)secret=([0-9A-Za-z_-]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("kvtk-secret", m[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

// ---- small DOM helpers (text only) ----
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v; else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const svgNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}
const serverNow = () => Date.now() + state.offset;
function dur(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
}
// A span whose text the clock keeps current: time since `since`, or left until `until`.
function since(ms) { return ms ? el("span", { class: "t", "data-since": ms }, dur(serverNow() - ms)) : el("span", { class: "t" }, "–"); }
function until(ms) { return ms ? el("span", { class: "t", "data-until": ms }, dur(ms - serverNow())) : el("span", { class: "t" }, "–"); }
function clock() {
  const now = serverNow();
  for (const e of document.querySelectorAll("[data-since]")) e.textContent = dur(now - Number(e.getAttribute("data-since")));
  for (const e of document.querySelectorAll("[data-until]")) e.textContent = dur(Number(e.getAttribute("data-until")) - now);
  for (const id of state.openLocks) renderLockDetail(id);
  for (const card of document.querySelectorAll("[data-timeline]")) refreshTimeline(card);
}
function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

// ---- the event stream: one per browser through a shared worker, else one per tab ----
function connect() {
  if (window.SharedWorker) {
    try {
      const w = new SharedWorker("/worker.js");
      w.port.onmessage = (m) => handle(m.data.type, m.data.data);
      w.port.start();
      addEventListener("pagehide", () => w.port.postMessage("bye"));
      return;
    } catch (_) { /* fall back to a stream of this tab's own */ }
  }
  const es = new EventSource("/api/events");
  for (const t of ["snapshot", "update"]) es.addEventListener(t, (ev) => handle(t, ev.data));
  es.onerror = () => handle("down");
}
function handle(type, data) {
  const conn = document.getElementById("conn");
  if (type === "down") { conn.textContent = "reconnecting…"; conn.setAttribute("data-state", "down"); return; }
  if (type === "snapshot") {
    const s = JSON.parse(data);
    state.offset = s.now_ms - Date.now();
    for (const v of VIEWS) {
      state.items[v] = new Map();
      for (const item of s[v].items) state.items[v].set(itemId(v, item), item);
      state.status[v] = s[v].status;
    }
    conn.textContent = "live"; conn.setAttribute("data-state", "live");
    renderAll();
    return;
  }
  const u = JSON.parse(data);
  state.offset = u.now_ms - Date.now();
  conn.textContent = "live"; conn.setAttribute("data-state", "live");
  if ("status" in u) { state.status[u.view] = u.status; renderStatus(); return; }
  if ("leases" in u) { renewLeases(u.view, u.id, u.leases); return; }
  if (u.item === null) state.items[u.view].delete(u.id); else state.items[u.view].set(u.id, u.item);
  renderItem(u.view, u.id);
  window.__kvtkUpdates = (window.__kvtkUpdates || 0) + 1;
}
function itemId(view, item) {
  return { locks: item.name, elections: item.name, members: item.group, config: item.key, buckets: item.name }[view];
}

// ---- views ----
function show(view) {
  state.view = view;
  sessionStorage.setItem("kvtk-view", view);
  for (const v of VIEWS) document.getElementById("view-" + v).hidden = v !== view;
  for (const b of document.querySelectorAll("#tabs button")) b.setAttribute("aria-selected", b.dataset.view === view);
  renderStatus();
}
function renderStatus() {
  const s = state.status[state.view];
  document.getElementById("status").textContent = s ? s.message : "";
  for (const v of VIEWS) document.querySelector(`[data-count="${v}"]`).textContent = state.items[v].size || "";
}
function renderAll() {
  for (const v of VIEWS) {
    document.getElementById(CONTAINER[v]).replaceChildren();
    nodes[v] = new Map();
    order[v] = [];
    const ids = [...state.items[v].keys()].sort();
    for (const id of ids) renderItem(v, id);
  }
  if (state.doc) renderDoc();
  renderStatus();
}
const RENDER = { locks: lockRow, elections: electionCard, members: groupCard, config: docEntry, buckets: bucketRow };
const CONTAINER = { locks: "locks", elections: "elections", members: "members", config: "config-docs", buckets: "buckets" };
const nodes = { locks: new Map(), elections: new Map(), members: new Map(), config: new Map(), buckets: new Map() };
const order = { locks: [], elections: [], members: [], config: [], buckets: [] };
// The position of `id` in the sorted array `a` (binary search).
function place(a, id) {
  let lo = 0, hi = a.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (a[mid] < id) lo = mid + 1; else hi = mid; }
  return lo;
}

// Puts item `id` of `view` in place (sorted by id), or removes it.
function renderItem(view, id) {
  const box = document.getElementById(CONTAINER[view]);
  const old = nodes[view].get(id);
  const item = state.items[view].get(id);
  const ids = order[view];
  const at = place(ids, id);
  if (old) { for (const n of old) n.remove(); nodes[view].delete(id); ids.splice(at, 1); }
  if (item) {
    const made = RENDER[view](item, id);
    const list = Array.isArray(made) ? made : [made];
    nodes[view].set(id, list);
    ids.splice(at, 0, id);
    const anchor = at + 1 < ids.length ? nodes[view].get(ids[at + 1])[0] : null;
    for (const n of list) box.insertBefore(n, anchor);
    if (view === "locks" && list.length > 1) renderLockDetail(id);
    if (view === "locks") filterRow(id);
  }
  if (view === "config" && state.doc === id) renderDoc();
  renderStatus();
}

// Renewals: only the lease deadlines of an item's entries moved; the item is not drawn again.
function renewLeases(view, id, leases) {
  const item = state.items[view].get(id);
  if (!item) return;
  for (const e of item.holders.concat(item.waiters)) {
    if (String(e.token) in leases) e.expires_ms = leases[String(e.token)];
  }
  for (const n of nodes[view].get(id) || []) {
    for (const chip of n.querySelectorAll("[data-token]")) {
      const exp = leases[chip.getAttribute("data-token")];
      const until = chip.querySelector("[data-until]");
      if (exp && until) until.setAttribute("data-until", exp);
    }
  }
}

// ---- Locks ----
function entryChip(e, i, lock, holder) {
  const who = e.holder === null ? "(unreadable entry)" : e.holder;
  const chip = el("span", { class: "entry", "data-role": holder ? "holder" : "waiter", "data-token": e.token },
    i !== null ? el("span", { class: "t" }, (i + 1) + ". ") : null,
    el("span", { class: "who" }, who), " ",
    el("span", { class: "tok" }, "token " + e.token), " ",
    holder ? el("span", { class: "t" }, "held ", since(e.held_since_ms)) : el("span", { class: "t" }, "waits ", since(e.queued_ms)),
    holder ? el("span", { class: "t" }, " · lease ", until(e.expires_ms)) : null,
    e.kind === "shared" ? el("span", { class: "badge" }, "reader") : null,
    e.multi ? el("span", { class: "badge multi", title: multiText(e.multi_with) }, "multi-lock") : null);
  if (holder && state.meta && state.meta.allow_writes) {
    const b = el("button", { class: "act", type: "button", "data-action": "release" }, "force release");
    b.addEventListener("click", (ev) => { ev.stopPropagation(); confirmRelease(lock, e); });
    chip.append(" ", b);
  }
  return chip;
}
// The other locks a multi-lock took together with this one.
function multiText(with_) {
  return with_ && with_.length ? "with " + with_.join(", ") : "";
}
function lockRow(l, id) {
  const kind = l.kind === "semaphore" ? `semaphore ${l.permits}` : l.kind;
  const holders = l.holders.length ? l.holders.map((e) => entryChip(e, null, l.name, true)) : [el("span", { class: "muted" }, "free")];
  const shown = l.waiters.slice(0, 5).map((e, i) => entryChip(e, i, l.name, false));
  if (l.waiters.length > 5) shown.push(el("span", { class: "muted" }, `+${l.waiters.length - 5} more`));
  const row = el("tr", { class: "lock", "data-lock": id },
    el("td", { class: "name" }, l.name),
    el("td", {}, kind, l.multi ? el("div", { class: "multi", "data-multi": (l.multi_with || []).join(" ") }, el("span", { class: "badge" }, "multi-lock"), " ", el("span", { class: "t" }, multiText(l.multi_with))) : null),
    el("td", {}, ...holders),
    el("td", {}, ...(shown.length ? shown : [el("span", { class: "muted" }, "nobody")])));
  row.addEventListener("click", () => {
    if (state.openLocks.has(id)) state.openLocks.delete(id); else state.openLocks.add(id);
    renderItem("locks", id);
  });
  if (!state.openLocks.has(id)) return row;
  const detail = el("tr", { class: "detail", "data-detail": id }, el("td", { colspan: 4 }));
  return [row, detail];
}
function renderLockDetail(id) {
  const row = (nodes.locks.get(id) || [])[1];
  const l = state.items.locks.get(id);
  if (!row || !l) return;
  const queue = el("ol", { class: "line" }, ...l.holders.concat(l.waiters).map((e, i) =>
    el("li", {}, entryChip(e, null, l.name, i < l.holders.length),
      el("span", { class: "t" }, ` ${e.host || ""}${e.pid ? " pid " + e.pid : ""} · queued ${e.queued_ms ? new Date(e.queued_ms).toISOString() : "–"}`))));
  const bars = l.timeline.map((h) => ({ from: h.from_ms, to: h.to_ms, label: `${h.token} ${h.holder}` }));
  row.firstChild.replaceChildren(el("h3", {}, "queue"), queue, el("h3", {}, "holds seen by this console"), timeline(bars));
}
function filterRow(id) {
  const q = document.getElementById("filter-locks").value.trim().toLowerCase();
  const l = state.items.locks.get(id);
  const hit = !q || id.toLowerCase().includes(q) || (l && l.holders.some((h) => (h.holder || "").toLowerCase().includes(q)));
  for (const n of nodes.locks.get(id) || []) n.hidden = !hit;
}
function applyFilter() {
  for (const id of nodes.locks.keys()) filterRow(id);
}

// A timeline of bars {from, to (null: still open), label} over the last minutes. Positions
// are percentages of the drawing's width, so labels keep their shape at any width; a bar
// that just began still shows as a sliver at the right edge.
function timeline(bars) {
  const now = serverNow();
  const known = bars.map((b) => b.from).filter((x) => x);
  const start = Math.max(Math.min(now - 20000, ...known), now - 15 * 60000);
  const box = svg("svg", { class: "timeline", role: "img" });
  const pct = (t) => ((Math.min(Math.max(t, start), now) - start) / (now - start)) * 100;
  for (const b of bars) {
    const x0 = pct(b.from || start), x1 = pct(b.to || now);
    if (x1 <= 0) continue;
    const w = Math.max(0.6, x1 - x0), x = Math.min(x0, 100 - w);
    const r = svg("rect", { class: b.to ? "bar" : "bar open", x: x + "%", y: 8, width: w + "%", height: 22, rx: 2 });
    const t = svg("title"); t.textContent = b.label; r.append(t);
    box.append(r);
    if (w > 12) { const lbl = svg("text", { x: (x + 0.5) + "%", y: 23 }); lbl.textContent = b.label; box.append(lbl); }
  }
  return el("div", {}, box, el("div", { class: "axis" }, el("span", {}, "-" + dur(now - start)), el("span", {}, "now")));
}
// "1 member", "2 members".
function count(n, one) { return `${n} ${one}${n === 1 ? "" : "s"}`; }
function refreshTimeline(card) {
  const v = card.getAttribute("data-timeline"), id = card.getAttribute("data-id");
  const item = state.items[v].get(id);
  const slot = card.querySelector(".tl");
  if (item && slot) slot.replaceChildren(timeline(termBars(item)));
}

// ---- Elections ----
function termBars(e) { return e.terms.map((t) => ({ from: t.from_ms, to: t.to_ms, label: `term ${t.term} ${t.id}` })); }
function electionCard(e, id) {
  const health = e.health === "leading" ? "ok" : e.health === "no leader" ? "bad" : "warn";
  const recent = e.terms.filter((t) => t.from_ms && serverNow() - t.from_ms < 60000).length;
  const l = e.leader;
  const leader = l ? el("dl", { class: "kv" },
    el("dt", {}, "leader"), el("dd", { class: "leader", "data-leader": l.id }, l.id),
    el("dt", {}, "term"), el("dd", { class: "term" }, String(l.term)),
    el("dt", {}, "value"), el("dd", { class: "mono" }, l.value || "–"),
    el("dt", {}, "lease"), el("dd", {}, until(l.expires_ms)),
    l.transfer_to ? el("dt", {}, "handing over to") : null, l.transfer_to ? el("dd", {}, l.transfer_to) : null)
    : el("p", { class: "muted" }, "nobody leads");
  const line = el("ol", { class: "line" }, ...e.candidates.map((c) =>
    el("li", { "data-candidate": c.id }, c.id, c.leading ? el("span", { class: "badge ok" }, "leader") : null,
      c.value ? el("span", { class: "t mono" }, " " + c.value) : null, el("span", { class: "t" }, " · lease ", until(c.expires_ms)))));
  return el("div", { class: "card", "data-election": id, "data-timeline": "elections", "data-id": id },
    el("h2", {}, e.name, el("span", { class: "badge " + health }, e.health),
      recent >= 3 ? el("span", { class: "badge warn" }, `flapping: ${recent} terms in a minute`) : null),
    leader, el("h3", {}, "candidates in line"), e.candidates.length ? line : el("p", { class: "muted" }, "none"),
    el("h3", {}, "terms seen by this console"), el("div", { class: "tl" }, timeline(termBars(e))));
}

// ---- Members ----
function json(v) { return typeof v === "string" ? v : JSON.stringify(v); }
function groupCard(g, id) {
  const rows = g.members.map((m) => el("tr", { "data-member": m.id },
    el("td", { class: "mono" }, m.id), el("td", {}, String(m.joined_at)), el("td", { class: "mono" }, json(m.metadata)), el("td", {}, until(m.expires_ms))));
  const events = el("ul", { class: "events" }, ...g.events.slice().reverse().map((ev) =>
    el("li", { class: "ev-" + ev.event }, new Date(ev.at_ms).toLocaleTimeString(), " ", ev.event, " ", el("span", { class: "mono" }, ev.id))));
  return el("div", { class: "card", "data-group": id },
    el("h2", {}, g.group, el("span", { class: "badge" }, count(g.members.length, "member"))),
    el("table", { class: "small" }, el("thead", {}, el("tr", {}, el("th", {}, "member"), el("th", {}, "joined at revision"), el("th", {}, "metadata"), el("th", {}, "lease"))), el("tbody", {}, ...rows)),
    el("h3", {}, "events seen by this console"), g.events.length ? events : el("p", { class: "muted" }, "none yet"));
}

// ---- Configuration ----
function docEntry(d, id) {
  const li = el("li", { "data-doc": id, "data-mode": d.mode, "aria-selected": state.doc === id }, d.key, d.mode === "prefix" ? ".*" : "", " ",
    el("span", { class: "t" }, d.revision ? "rev " + d.revision : "deleted"),
    d.schema ? el("span", { class: "badge " + (d.schema.valid ? "ok" : "bad") }, d.schema.valid ? "valid" : "invalid") : null);
  li.addEventListener("click", () => { state.doc = id; for (const n of document.querySelectorAll("#config-docs li")) n.setAttribute("aria-selected", n === li); renderDoc(); });
  return li;
}
function renderDoc() {
  const box = document.getElementById("config-doc");
  const d = state.items.config.get(state.doc);
  if (!d) { box.replaceChildren(el("p", { class: "muted" }, "pick a document")); return; }
  const revs = d.history.map((h) => h.revision);
  const pick = (name, sel) => el("select", { id: "diff-" + name }, ...revs.map((r) => el("option", { value: r, selected: r === sel }, String(r))));
  const from = pick("from", revs[Math.max(0, revs.length - 2)]), to = pick("to", revs[revs.length - 1]);
  const out = el("div", { id: "diff-out" });
  const go = el("button", { type: "button", id: "diff-go" }, "diff");
  go.addEventListener("click", () => showDiff(d.key, from.value, to.value, out));
  const hist = el("table", { class: "small" }, ...d.history.slice().reverse().map((h) => el("tr", { "data-revision": h.revision },
    el("td", {}, String(h.revision)),
    el("td", { class: "mono" }, h.rejected ? "rejected: " + h.rejected : json(h.value)),
    el("td", {}, rollbackButton(d, h)))));
  const fleet = el("table", { class: "small" }, ...d.fleet.map((f) => el("tr", { "data-instance": f.instance },
    el("td", { class: "mono" }, f.instance), el("td", {}, "applied " + (f.ack.applied ?? "–")),
    el("td", {}, f.ack.refused ? "refused: " + f.ack.refused : f.ack.rejected ? "rejected " + f.ack.rejected : ""), el("td", {}, f.ack.stale ? "stale" : ""), el("td", {}, until(f.expires_ms)))));
  const schema = d.schema ? el("div", {}, el("span", { class: "badge " + (d.schema.valid ? "ok" : "bad") }, d.schema.valid ? "valid against the schema" : "invalid against the schema"),
    ...d.schema.errors.map((e) => el("div", { class: "finding-error mono" }, e))) : el("p", { class: "muted" }, "no schema given");
  const fields = d.mode === "prefix" ? el("p", { class: "t", id: "doc-fields" }, `prefix: one key per field (${d.fields.length}): `, d.fields.join(", ")) : null;
  box.replaceChildren(el("h2", {}, d.key, d.mode === "prefix" ? el("span", { class: "badge" }, "prefix") : null, el("span", { class: "badge" }, d.revision ? "revision " + d.revision : "deleted")),
    ...(fields ? [fields] : []), el("pre", { class: "value", id: "doc-value" }, JSON.stringify(d.value, null, 2)), schema,
    el("h3", {}, "diff"), revs.length > 1 ? el("div", {}, "from ", from, " to ", to, " ", go) : el("p", { class: "muted" }, "one revision: nothing to compare yet"), out,
    el("h3", {}, "history"), hist, el("h3", {}, "fleet"), d.fleet.length ? fleet : el("p", { class: "muted" }, "no reader acknowledges"));
}
async function showDiff(key, from, to, out) {
  const q = new URLSearchParams({ key, from, to });
  const r = await fetch("/api/config/diff?" + q);
  const rows = r.ok ? await r.json() : [];
  out.replaceChildren(el("table", { class: "small", id: "diff-table" }, el("tr", {}, el("th", {}, "field"), el("th", {}, "rev " + from), el("th", {}, "rev " + to)),
    ...rows.map((c) => el("tr", { "data-path": c.path }, el("td", { class: "mono" }, c.path), el("td", { class: "mono diff-from" }, json(c.from)), el("td", { class: "mono diff-to" }, json(c.to))))),
    ...(rows.length ? [] : [el("p", { class: "muted" }, "no difference")]));
}
function rollbackButton(d, h) {
  if (!state.meta || !state.meta.allow_writes || h.rejected || h.revision === d.revision) return null;
  const b = el("button", { class: "act", type: "button", "data-action": "rollback" }, "roll back to this");
  b.addEventListener("click", () => confirmAction(`Write document ${d.key} as it was at revision ${h.revision}?`,
    "/api/config/rollback", { key: d.key, revision: h.revision }));
  return b;
}

// ---- Buckets ----
function bucketRow(b, id) {
  const findings = (b.doctor && b.doctor.findings) || [];
  const worst = findings.some((f) => f.severity === "error") ? "bad" : findings.some((f) => f.severity === "warning") ? "warn" : "ok";
  const repl = b.leader ? `${b.replicas} (leader ${b.leader}${b.followers.length ? "; " + b.followers.map((f) => f.name + (f.current ? "" : " lagging")).join(", ") : ""})` : String(b.replicas);
  const where = [b.cluster ? "cluster " + b.cluster : null, b.placement_cluster ? "placed in " + b.placement_cluster : null,
    b.placement_tags.length ? "tags " + b.placement_tags.join(",") : null].filter((x) => x).join("; ");
  return el("tr", { "data-bucket": id },
    el("td", { class: "name" }, b.name, b.mirror_of ? el("span", { class: "badge" }, "mirror of " + b.mirror_of) : null),
    el("td", {}, (b.role || []).join(", ")), el("td", {}, String(b.history)), el("td", {}, String(b.keys)), el("td", {}, String(b.values)),
    el("td", {}, String(b.bytes)), el("td", {}, repl, where ? el("div", { class: "t" }, where) : null), el("td", {}, b.storage + (b.compression ? ", s2" : "")),
    el("td", {}, b.marker_ttl !== null ? "on, markers " + dur(b.marker_ttl * 1000) : "off"), el("td", {}, b.max_age ? dur(b.max_age * 1000) : "–"),
    el("td", {}, b.doctor ? el("span", { class: "badge " + worst }, count(findings.length, "finding")) : "–",
      ...findings.map((f) => el("div", { class: "finding-" + f.severity }, `${f.severity} ${f.code}: ${f.message}`))));
}

// ---- actions ----
function confirmRelease(lock, e) {
  confirmAction(`Force-release lock ${lock}: evict ${e.holder || "an unreadable entry"} (token ${e.token})? Its holder loses the lock at its next renewal.`,
    "/api/locks/release", { name: lock, token: e.token });
}
function confirmAction(text, url, body) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  const secret = document.getElementById("confirm-secret");
  secret.value = sessionStorage.getItem("kvtk-secret") || "";
  const ok = document.getElementById("confirm-ok");
  const fresh = ok.cloneNode(true); ok.replaceWith(fresh);
  fresh.addEventListener("click", async (ev) => {
    ev.preventDefault();
    dlg.close();
    sessionStorage.setItem("kvtk-secret", secret.value);
    const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json", "x-kvtk-secret": secret.value }, body: JSON.stringify(body) });
    const answer = await r.json().catch(() => ({}));
    toast(r.ok ? "done: " + JSON.stringify(answer) : `refused (${r.status}): ${answer.error || ""}`);
  });
  dlg.showModal();
}

// ---- start ----
window.__kvtkPage = String(Math.random());
document.addEventListener("DOMContentLoaded", async () => {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.view));
  document.getElementById("confirm-cancel").addEventListener("click", () => document.getElementById("confirm").close());
  document.getElementById("filter-locks").addEventListener("input", applyFilter);
  try { state.meta = await (await fetch("/api/meta")).json(); } catch (_) { state.meta = null; }
  document.getElementById("mode").textContent = state.meta && state.meta.allow_writes ? "writes allowed" : "read-only";
  const wanted = new URLSearchParams(location.search).get("view") || sessionStorage.getItem("kvtk-view");
  show(VIEWS.includes(wanted) ? wanted : "locks");
  connect();
  setInterval(clock, 1000);
});
