// kvtk ui: one event stream per browser, shared by every open tab of the console (a
// browser opens at most six HTTP/1.1 connections to one host: six tabs with a stream each
// would leave the seventh waiting). The worker keeps the state so that a tab opened later
// starts from a snapshot; it ends when the last tab closes, and its stream with it.
"use strict";
const VIEWS = ["locks", "elections", "members", "config", "buckets"];
const ports = new Set();
let es = null;
let state = null;
let nowMs = 0, nowAt = 0;

function idOf(view, item) {
  return { locks: item.name, elections: item.name, members: item.group, config: item.key, buckets: item.name }[view];
}
function take(s) {
  state = {};
  for (const v of VIEWS) {
    state[v] = { items: new Map(), status: s[v].status };
    for (const item of s[v].items) state[v].items.set(idOf(v, item), item);
  }
}
function apply(u) {
  if (!state) return;
  if ("status" in u) state[u.view].status = u.status;
  else if ("leases" in u) {
    // Renewals of an item's entries: their new deadlines.
    const item = state[u.view].items.get(u.id);
    for (const e of item ? item.holders.concat(item.waiters) : []) {
      if (String(e.token) in u.leases) e.expires_ms = u.leases[String(e.token)];
    }
  }
  else if (u.item === null) state[u.view].items.delete(u.id);
  else state[u.view].items.set(u.id, u.item);
}
function snapshot() {
  const out = { now_ms: nowMs + (Date.now() - nowAt) };
  for (const v of VIEWS) out[v] = { items: [...state[v].items.values()], status: state[v].status };
  return JSON.stringify(out);
}
function send(msg) { for (const p of ports) p.postMessage(msg); }
function start() {
  es = new EventSource("/api/events");
  es.addEventListener("snapshot", (ev) => {
    const s = JSON.parse(ev.data);
    nowMs = s.now_ms; nowAt = Date.now();
    take(s);
    send({ type: "snapshot", data: ev.data });
  });
  es.addEventListener("update", (ev) => {
    const u = JSON.parse(ev.data);
    nowMs = u.now_ms; nowAt = Date.now();
    apply(u);
    send({ type: "update", data: ev.data });
  });
  es.onerror = () => send({ type: "down" });
}
onconnect = (e) => {
  const port = e.ports[0];
  ports.add(port);
  port.onmessage = (m) => { if (m.data === "bye") ports.delete(port); };
  port.start();
  if (state) port.postMessage({ type: "snapshot", data: snapshot() });
  if (!es) start();
};
