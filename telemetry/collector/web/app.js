// meshbus service graph: polls api/graph (Kiali's graph shape) and draws it as SVG.
// Layout: nodes in layers by their longest distance from a node nobody calls (callers left,
// callees right), spread evenly within a layer; edges are curves with their traffic on them.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 170, NODE_H = 48, COL_GAP = 300, ROW_GAP = 70, MARGIN = 40;
const svg = document.getElementById("graph");
const statusEl = document.getElementById("status");
const emptyEl = document.getElementById("empty");
const windowEl = document.getElementById("window");

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Longest-path layering; edges that close a cycle are ignored for the layering only.
function layers(nodes, edges) {
  const out = new Map(nodes.map((n) => [n.id, []]));
  const indeg = new Map(nodes.map((n) => [n.id, 0]));
  for (const e of edges) {
    if (e.source === e.target || !out.has(e.source) || !out.has(e.target)) continue;
    out.get(e.source).push(e.target);
    indeg.set(e.target, indeg.get(e.target) + 1);
  }
  const layer = new Map(nodes.map((n) => [n.id, 0]));
  const queue = nodes.filter((n) => indeg.get(n.id) === 0).map((n) => n.id);
  const seen = new Set();
  while (queue.length) {
    const id = queue.shift();
    seen.add(id);
    for (const t of out.get(id)) {
      layer.set(t, Math.max(layer.get(t), layer.get(id) + 1));
      indeg.set(t, indeg.get(t) - 1);
      if (indeg.get(t) === 0) queue.push(t);
    }
  }
  for (const n of nodes) if (!seen.has(n.id)) layer.set(n.id, Math.max(1, layer.get(n.id)));
  return layer;
}

function place(nodes, edges) {
  const layer = layers(nodes, edges);
  const cols = new Map();
  for (const n of [...nodes].sort((a, b) => a.id.localeCompare(b.id))) {
    const l = layer.get(n.id);
    if (!cols.has(l)) cols.set(l, []);
    cols.get(l).push(n);
  }
  const tallest = Math.max(1, ...[...cols.values()].map((c) => c.length));
  const height = tallest * NODE_H + (tallest - 1) * ROW_GAP + 2 * MARGIN;
  const pos = new Map();
  for (const [l, col] of cols) {
    const colH = col.length * NODE_H + (col.length - 1) * ROW_GAP;
    col.forEach((n, i) => {
      pos.set(n.id, { x: MARGIN + l * (NODE_W + COL_GAP), y: (height - colH) / 2 + i * (NODE_H + ROW_GAP) });
    });
  }
  const width = MARGIN * 2 + (Math.max(0, ...cols.keys()) + 1) * (NODE_W + COL_GAP) - COL_GAP;
  return { pos, width, height };
}

// A padlock drawn in SVG (no icon font, no emoji font needed): shackle arc over a body.
function lock(x, y) {
  const g = el("g", { class: "lock", transform: `translate(${x},${y})` });
  g.append(el("path", { d: "M 2.5 6 V 4 a 2.5 2.5 0 0 1 5 0 V 6", fill: "none", "stroke-width": "1.6" }));
  g.append(el("rect", { x: "0", y: "6", width: "10", height: "8", rx: "1.5" }));
  g.append(el("title", {}, "mutual TLS"));
  return g;
}

function health(errPct) {
  if (errPct === 0) return "ok";
  return errPct < 5 ? "warn" : "bad";
}

function fmtMs(v) {
  if (v === null || v === undefined) return "–";
  return v >= 1000 ? (v / 1000).toFixed(2) + "s" : v.toFixed(v < 10 ? 1 : 0) + "ms";
}

function draw(graph) {
  const nodes = graph.elements.nodes.map((n) => n.data);
  const edges = graph.elements.edges.map((e) => e.data);
  svg.replaceChildren();
  emptyEl.hidden = nodes.length > 0;
  if (!nodes.length) return;
  const { pos, width, height } = place(nodes, edges);
  // Never zoom a small graph up past ~1:1: a fixed minimum viewBox keeps text at its CSS size.
  const vw = Math.max(width, 1100), vh = Math.max(height, 480);
  svg.setAttribute("viewBox", `${(width - vw) / 2} ${(height - vh) / 2} ${vw} ${vh}`);
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z" }));
  defs.append(marker);
  svg.append(defs);

  const edgeLayer = el("g", { class: "edges" });
  const pairCount = new Map();
  for (const e of edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    if (!a || !b) continue;
    const key = e.source + "|" + e.target;
    const k = pairCount.get(key) || 0;
    pairCount.set(key, k + 1);
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2 + k * 10;
    const x2 = b.x, y2 = b.y + NODE_H / 2 + k * 10;
    const back = x2 <= x1;
    const bend = back ? -90 - 30 * k : 0;
    const d = back
      ? `M ${a.x + NODE_W / 2} ${a.y} C ${a.x + NODE_W / 2} ${a.y + bend}, ${b.x + NODE_W / 2} ${b.y + bend}, ${b.x + NODE_W / 2} ${b.y}`
      : `M ${x1} ${y1} C ${(x1 + x2) / 2} ${y1}, ${(x1 + x2) / 2} ${y2}, ${x2} ${y2}`;
    const rates = e.traffic.rates;
    const err = parseFloat(rates.httpPercentErr);
    const mtls = parseFloat(e.isMTLS) >= 50;
    const g = el("g", { class: `edge ${health(err)}`, "data-source": e.source, "data-target": e.target, "data-mtls": String(mtls), "data-rps": rates.http });
    g.append(el("path", { d, "marker-end": "url(#arrow)" }));
    // Labels sit on the curve two thirds of the way, nearer the callee, so fanned-out edges part.
    const t = 0.66, s3 = 3 * t * t - 2 * t * t * t;
    const lx = back ? (a.x + b.x + NODE_W) / 2 : x1 + (x2 - x1) * t;
    const ly = back ? Math.min(a.y, b.y) + bend * 0.75 : y1 + (y2 - y1) * s3 - 10;
    const label = `${(+rates.http).toFixed(1)} rps · ${err.toFixed(1)}% err · p99 ${fmtMs(e.responseTime)}`;
    g.append(el("text", { x: lx, y: ly, "text-anchor": "middle" }, label));
    if (mtls) g.append(lock(lx - 5, ly + 6));
    const title = el("title", {}, `${e.source} → ${e.target} (${e.destService}), reported by the ${e.reporter}`);
    g.append(title);
    edgeLayer.append(g);
  }
  svg.append(edgeLayer);

  const nodeLayer = el("g", { class: "nodes" });
  for (const n of nodes) {
    const p = pos.get(n.id);
    const g = el("g", { class: `node ${n.nodeType}`, "data-id": n.id, transform: `translate(${p.x},${p.y})` });
    g.append(el("rect", { width: NODE_W, height: NODE_H }));
    g.append(el("text", { class: "name", x: 10, y: 20 }, n.workload === "unknown" ? "unknown caller" : n.workload));
    const sub = [n.namespace, n.version !== "unknown" ? n.version : null].filter(Boolean).join(" · ");
    g.append(el("text", { class: "sub", x: 10, y: 37 }, sub));
    g.append(el("title", {}, `${n.id}\napp ${n.app}, version ${n.version}` + (n.service ? `\nservice ${n.service}` : "")));
    nodeLayer.append(g);
  }
  svg.append(nodeLayer);
}

async function refresh() {
  try {
    const r = await fetch(`api/graph?window=${windowEl.value}`, { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const graph = await r.json();
    draw(graph);
    statusEl.textContent = `live · ${graph.proxies} proxies · ${graph.replicas} replica(s) · ${new Date().toLocaleTimeString()}`;
    statusEl.className = "status ok";
  } catch (err) {
    statusEl.textContent = `no data: ${err.message}`;
    statusEl.className = "status err";
  }
}

windowEl.addEventListener("change", refresh);
refresh();
setInterval(refresh, 2000);
