// burrow status page: polls /api/status once a second and redraws. Shipped inside the binary and
// served as /app.js so the Content-Security-Policy can forbid inline script. Every value from the
// API goes into the page as text (textContent / attributes), never as HTML: refusal details
// quote what clients asked for.
"use strict";

const POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const HISTORY = 60;
let polls = 0;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

function rate(n) { return n > 0 ? `${bytes(n)}/s` : "idle"; }

function ago(unixSecs, now) {
  const s = Math.max(0, now - unixSecs);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

// Two lines (sent, received) over the last minute, newest on the right, on a shared scale.
function sparkline(t, width = 132, height = 30, fluid = false) {
  const box = svg("svg", {
    class: "spark", width: fluid ? "100%" : width, height, viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: "none", role: "img",
  });
  const sent = t.sent_history || [], recv = t.received_history || [];
  const max = Math.max(1, ...sent, ...recv);
  const step = width / (HISTORY - 1);
  const points = (series) => series.map((v, i) => {
    const x = (HISTORY - series.length + i) * step;
    const y = height - 2 - (v / max) * (height - 5);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  box.append(svg("line", { class: "base", x1: 0, y1: height - 1.5, x2: width, y2: height - 1.5, "stroke-width": 1, "vector-effect": "non-scaling-stroke" }));
  const s = points(sent);
  if (s.length > 1) {
    const firstX = s[0].split(",")[0];
    box.append(svg("polygon", { class: "area-sent", "fill-opacity": 0.14, points: `${firstX},${height} ${s.join(" ")} ${width},${height}` }));
    box.append(svg("polyline", { class: "line-sent", fill: "none", "stroke-width": 1.6, "stroke-linejoin": "round", "vector-effect": "non-scaling-stroke", points: s.join(" ") }));
  }
  const r = points(recv);
  if (r.length > 1) {
    box.append(svg("polyline", { class: "line-recv", fill: "none", "stroke-width": 1.4, "stroke-linejoin": "round", "vector-effect": "non-scaling-stroke", "stroke-dasharray": "3 2", points: r.join(" ") }));
  }
  const title = svg("title", {});
  title.textContent = `last minute: sent ${rate(t.sent_per_sec)}, received ${rate(t.received_per_sec)}`;
  box.append(title);
  return box;
}

function tile(label, value, sub, wide) {
  return el("div", { class: wide ? "tile wide" : "tile" },
    el("div", { class: "label" }, label),
    el("div", { class: "value" }, value),
    sub ? el("div", { class: "sub" }, sub) : null);
}

function throughputTile(t, sentTotal, recvTotal) {
  const spark = sparkline(t, 280, 34, true);
  return el("div", { class: "tile wide" },
    el("div", { class: "label" }, "Throughput · last minute"),
    spark,
    el("div", { class: "sub" },
      el("span", { class: "sent" }, "▲ sent "), `${bytes(sentTotal)} · ${rate(t.sent_per_sec)}`),
    el("div", { class: "sub" },
      el("span", { class: "recv" }, "▼ received "), `${bytes(recvTotal)} · ${rate(t.received_per_sec)}`));
}

function forwardTable(rows, head) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...head.map(([h, cls]) => el("th", { class: cls }, h)))),
    el("tbody", {}, ...rows));
}

function renderServe(d) {
  const t = d.totals;
  const refusals = Object.entries(t.refusals).filter(([, n]) => n > 0);
  const refusedTotal = refusals.reduce((a, [, n]) => a + n, 0);
  document.getElementById("title").textContent = "burrow serve";
  document.getElementById("subtitle").textContent = `relay on ${d.listen} · up ${ago(d.started, d.now)} · v${d.version}`;
  document.getElementById("summary").replaceChildren(
    tile("Sessions", t.sessions, `${t.sessions_total} since start`),
    tile("Listeners", t.listeners, "-R ports held"),
    tile("Channels", t.channels, `${t.channels_total} so far`),
    tile("Refusals", refusedTotal, refusals.map(([r, n]) => `${r} ${n}`).join(" · ") || "none"),
    tile("Auth failures", t.auth_failures, `${t.unauthenticated} awaiting auth`),
    tile("Takeovers", t.takeovers, "stale ports"),
    throughputTile(t.throughput, t.sent_bytes, t.received_bytes));
  document.getElementById("items-title").textContent = `Sessions (${d.sessions.length})`;
  const cards = d.sessions.map((s) => {
    const rows = s.forwards.map((f) => el("tr", {
      class: "forward", "data-session": s.id, "data-forward": f.id, "data-kind": f.kind,
      "data-bind": f.bind, "data-sent": f.sent_bytes, "data-received": f.received_bytes,
    },
      el("td", {}, el("span", { class: "mono" }, f.kind === "remote" ? `-R ${f.bind}` : f.kind === "alias" ? `alias ${f.bind}` : "-L/-D/-W channels")),
      el("td", { class: "mono muted" }, f.bound.join(", ") || "—"),
      el("td", { class: "num" }, `${f.connections_active} / ${f.connections_total}`),
      el("td", { class: "num sent" }, bytes(f.sent_bytes)),
      el("td", { class: "num recv" }, bytes(f.received_bytes)),
      el("td", { class: "num" }, rate(f.throughput.sent_per_sec + f.throughput.received_per_sec)),
      el("td", { class: "spark" }, sparkline(f.throughput))));
    const body = rows.length
      ? forwardTable(rows, [["forward"], ["bound"], ["open / total", "num"], ["sent ▲", "num"], ["received ▼", "num"], ["rate", "num"], ["last minute"]])
      : el("div", { class: "empty" }, "no forwards yet");
    return el("div", { class: "card session", "data-session-id": s.id, "data-fingerprint": s.fingerprint },
      el("div", { class: "card-head" },
        el("span", { class: "name" }, `#${s.id}`),
        s.comment ? el("span", { class: "chip" }, s.comment) : null,
        el("span", { class: "mono" }, s.fingerprint),
        el("span", { class: "meta" }, `user ${s.user} · from ${s.peer} · connected ${ago(s.since, d.now)} ago`)),
      body);
  });
  document.getElementById("items").replaceChildren(
    ...(cards.length ? cards : [el("div", { class: "empty" }, "No sessions. Clients appear here once they authenticate.")]));
}

function renderUp(d) {
  const up = d.tunnels.filter((x) => x.state === "up").length;
  const sent = d.tunnels.reduce((a, x) => a + x.bytes_out, 0);
  const recv = d.tunnels.reduce((a, x) => a + x.bytes_in, 0);
  const total = { sent_per_sec: 0, received_per_sec: 0, sent_history: [], received_history: [] };
  for (const x of d.tunnels) {
    total.sent_per_sec += x.throughput.sent_per_sec;
    total.received_per_sec += x.throughput.received_per_sec;
    x.throughput.sent_history.forEach((v, i, a) => { const j = HISTORY - a.length + i; total.sent_history[j] = (total.sent_history[j] || 0) + v; });
    x.throughput.received_history.forEach((v, i, a) => { const j = HISTORY - a.length + i; total.received_history[j] = (total.received_history[j] || 0) + v; });
  }
  total.sent_history = total.sent_history.filter((v) => v !== undefined);
  total.received_history = total.received_history.filter((v) => v !== undefined);
  document.getElementById("title").textContent = "burrow up";
  const n = d.tunnels.length;
  document.getElementById("subtitle").textContent = `${n} tunnel${n === 1 ? "" : "s"} · v${d.version}`;
  document.getElementById("summary").replaceChildren(
    tile("Tunnels up", `${up} / ${d.tunnels.length}`, up === d.tunnels.length ? "all up" : "some are down"),
    tile("Reconnects", d.tunnels.reduce((a, x) => a + x.reconnects, 0), "since start"),
    tile("Connections", d.tunnels.reduce((a, x) => a + x.connections_active, 0), `${d.tunnels.reduce((a, x) => a + x.connections_total, 0)} so far`),
    tile("Failing", d.tunnels.filter((x) => x.failures > 0).length, "with failed attempts"),
    throughputTile(total, sent, recv));
  document.getElementById("items-title").textContent = `Tunnels (${d.tunnels.length})`;
  const idle = { sent_per_sec: 0, received_per_sec: 0, sent_history: [], received_history: [] };
  const cards = d.tunnels.map((x) => {
    const rows = (x.forwards || []).map((f, i) => {
      const th = (x.forward_throughput || [])[i] || idle;
      return el("tr", {
        class: "forward", "data-tunnel": x.name, "data-spec": f.spec,
        "data-sent": f.bytes_out, "data-received": f.bytes_in,
      },
        el("td", {}, el("span", { class: "mono" }, f.spec)),
        el("td", { class: "num" }, `${f.connections_active} / ${f.connections_total}`),
        el("td", { class: "num sent" }, bytes(f.bytes_out)),
        el("td", { class: "num recv" }, bytes(f.bytes_in)),
        el("td", { class: "num" }, rate(th.sent_per_sec + th.received_per_sec)),
        el("td", { class: "spark" }, sparkline(th)));
    });
    const body = rows.length
      ? forwardTable(rows, [["forward (this session)"], ["open / total", "num"], ["sent ▲", "num"], ["received ▼", "num"], ["rate", "num"], ["last minute"]])
      : el("div", { class: "empty" }, "no forwards up");
    return el("div", { class: "card tunnel", "data-tunnel": x.name, "data-state": x.state, "data-sent": x.bytes_out, "data-received": x.bytes_in },
      el("div", { class: "card-head" },
        el("span", { class: "name" }, x.name),
        el("span", { class: `state state-${x.state}` }, x.state),
        el("span", { class: "meta" }, `for ${ago(x.since, d.now)} · ${x.server || "—"} · ${x.reconnects} reconnects · `,
          el("span", { class: "sent" }, `▲ ${bytes(x.bytes_out)}`), " ",
          el("span", { class: "recv" }, `▼ ${bytes(x.bytes_in)}`), " since start"),
        x.last_error ? el("span", { class: "error" }, `last error: ${x.last_error}`) : null),
      body);
  });
  document.getElementById("items").replaceChildren(
    ...(cards.length ? cards : [el("div", { class: "empty" }, "No tunnels in the file.")]));
}

function renderEvents(events) {
  const rows = events.slice(0, 50).map((e) => el("tr", { "data-kind": e.kind },
    el("td", { class: "when" }, new Date(e.time_ms).toLocaleTimeString()),
    el("td", {}, el("span", { class: `kind kind-${e.kind}` }, e.kind.replace("_", " "))),
    el("td", { class: "mono" }, e.subject),
    el("td", {}, e.detail)));
  document.getElementById("events").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "nothing yet"))]));
}

function setConn(text, cls) {
  const c = document.getElementById("conn");
  c.textContent = text;
  c.className = `pill ${cls}`;
}

async function poll() {
  try {
    const res = await fetch("/api/status", { cache: "no-store", headers: { Accept: "application/json" } });
    if (res.status === 401) { setConn("needs the access token", "pill-bad"); return; }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const d = await res.json();
    if (d.kind === "serve") renderServe(d); else renderUp(d);
    renderEvents(d.events);
    polls++;
    document.body.dataset.polls = String(polls);
    setConn(`live · ${new Date().toLocaleTimeString()}`, "pill-ok");
  } catch (e) {
    setConn(`disconnected (${e.message}); retrying`, "pill-bad");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
