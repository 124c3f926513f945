"""The HTML view of a ``ReportData``: one self-contained page (plotly.js inlined, no server,
no internet) drawn in the browser from the report's JSON. The dashboard serves the same page
and refreshes it from ``/api/runs/NAME`` until the run ends.

What a reader sees first is the winner: the best-ever model, its margin over the runner-up and
over the best member PBT never touched, how it got there (one sentence per generation), where
its weights are and the commands to export or replay it. Then the scores, the schedules, the
family tree, which hyperparameters mattered, and the tables.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from poptrain.report.data import ReportData

RENDER_JS = r"""
const WIN = "#d62728";  // the winner's ancestry: the same colour in every plot
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const VIRIDIS = [[0, "#440154"], [0.25, "#3b528b"], [0.5, "#21918c"], [0.75, "#5ec962"], [1, "#fde725"]];
const WAITING = "waiting for the first score";
let highlighted = null;  // the member whose lines stand out (click a line; click again to restore)
let memberSort = {key: "slot", descending: false};

function num(v) { return typeof v === "number" ? Number(v.toPrecision(4)) : v; }
function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(num(v));
  if (Array.isArray(v)) return "[" + v.map(fmt).join(", ") + "]";
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => k + ": " + fmt(x)).join(", ");
  return String(v);
}
function label(v) {
  // plotly reads a subset of HTML in titles, trace names and hover texts: data shows literally
  return String(v).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
function numeric(v) {
  if (typeof v === "number") return v;
  if (Array.isArray(v) && v.every(x => typeof x === "number")) return v.reduce((a, b) => a + b, 0);
  return null;
}
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? h + " h " + m + " min" : m ? m + " min " + (s % 60) + " s" : (s % 60) + " s";
}
function colour(slot) { return PALETTE[((slot % PALETTE.length) + PALETTE.length) % PALETTE.length]; }
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); if (cls) e.className = cls; return e; }
function finiteScores(d) { return d.curves.reduce((n, c) => n + c.values.filter(v => v !== null && isFinite(v)).length, 0); }
function generationNumbers(d) { const m = {}; d.tree.forEach(n => { m[n.id] = n; }); return m; }
function ancestrySet(d) {
  if (d.ancestry_generations) return new Set(d.ancestry_generations);
  return new Set(d.tree.filter(n => n.on_winner_path).map(n => n.id));
}
function winnerOf(d) {
  if (d.winner) return d.winner;
  const s = d.summary || {};  // data written before the winner was part of the report
  if (s.best_slot === null || s.best_slot === undefined) return null;
  return {slot: s.best_slot, score: s.best_score, step: s.best_step, runner_up: null, untouched: null, story: [],
          checkpoint: null, export_command: null, replay_command: null};
}
function plot(id, traces, layout, empty) {
  // draw into #id, or say why there is nothing to draw yet (no axes from -1 to 6)
  const div = document.getElementById(id);
  if (empty) { if (div.data) Plotly.purge(div); div.replaceChildren(el("p", empty, "waiting")); return false; }
  if (!div.data) div.replaceChildren();
  layout.uirevision = "keep";  // zoom and legend choices survive the dashboard's refreshes
  Plotly.react(div, traces, layout, {responsive: true, displaylogo: false});
  return true;
}

// --- the winner ------------------------------------------------------------------------------------
function drawWinner(d) {
  const box = document.getElementById("winner"), w = winnerOf(d);
  box.replaceChildren();
  if (!w) { box.appendChild(el("p", WAITING, "headline")); return; }
  box.appendChild(el("p", "Winner: member " + w.slot + ", " + d.metric + " = " + fmt(w.score) + " at step " + w.step, "headline"));
  const facts = el("ul");
  if (w.runner_up) {
    const r = w.runner_up;
    facts.appendChild(el("li", r.margin > 0 ? "Beats the runner-up, member " + r.slot + " (" + fmt(r.score) + "), by " + fmt(r.margin) + "."
      : "Ties the runner-up, member " + r.slot + " (" + fmt(r.score) + ")."));
  } else if (d.population > 1) facts.appendChild(el("li", "No other member has a checkpointed score yet."));
  if (w.untouched) {
    const u = w.untouched, sign = u.margin > 0 ? "+" : "";
    facts.appendChild(el("li", u.slot === w.slot ? "PBT never touched the winner: it trained on its first hyperparameters all along, as in a random search."
      : u.margin > 0
      ? "PBT bought " + sign + fmt(u.margin) + " over the best member it never touched (member " + u.slot + ", " + fmt(u.score) + ")."
      : u.margin === 0 ? "PBT bought nothing: the best member it never touched (member " + u.slot + ") scored the same, " + fmt(u.score) + "."
      : "PBT lost " + fmt(-u.margin) + " against the best member it never touched (member " + u.slot + ", " + fmt(u.score) + ")."));
  } else if (d.winner) facts.appendChild(el("li", "PBT touched every member, so no untouched member is left to compare with."));
  box.appendChild(facts);
  if (w.story && w.story.length) {
    box.appendChild(el("h3", "How it got there"));
    const story = el("ol", undefined, "story");
    w.story.forEach(s => story.appendChild(el("li", s)));
    box.appendChild(story);
  }
  const where = el("dl");
  const item = (term, text, code) => { where.appendChild(el("dt", term)); const dd = el("dd"); dd.appendChild(el(code ? "code" : "span", text)); where.appendChild(dd); };
  if (d.winner) item("weights", w.checkpoint || "no checkpoint kept");
  if (w.export_command) item("save them", w.export_command, true);
  if (w.replay_command) item("retrain along its schedule", w.replay_command, true);
  if (where.children.length) box.appendChild(where);
}
function drawProgress(d) {
  const p = d.progress, parts = [];
  if (p && p.steps_done !== undefined) {
    parts.push(p.steps_planned ? p.steps_done + " of " + p.steps_planned + " steps" : p.steps_done + " steps trained");
    if (d.state === "running" && p.eta_seconds !== null && p.eta_seconds !== undefined) parts.push("ETA " + duration(p.eta_seconds));
  }
  document.getElementById("progress").textContent = parts.join(", ");
}

// --- scores ------------------------------------------------------------------------------------------
function drawScores(d) {
  const gens = generationNumbers(d), path = ancestrySet(d), traces = [];
  d.curves.forEach(c => {
    const xs = [], ys = [], text = [], ids = c.generations || [];
    c.steps.forEach((s, i) => {
      if (i > 0 && ids.length && ids[i] !== ids[i - 1]) { xs.push(null); ys.push(null); text.push(null); }  // a copy: not training
      const g = gens[ids[i]];
      xs.push(s); ys.push(c.values[i]);
      text.push(label("member " + c.slot + (g ? ", gen " + g.number : "") + ", step " + s + ": " + fmt(c.values[i])));
    });
    traces.push({x: xs, y: ys, text: text, hoverinfo: "text", mode: "lines", name: "member " + c.slot, meta: c.slot,
                 legendgroup: "m" + c.slot, line: {width: 1.2, color: colour(c.slot)}, opacity: 0.75, connectgaps: false});
  });
  const wx = [], wy = [], wt = [];  // the winner's ancestry over the members' curves
  d.curves.forEach(c => (c.generations || []).forEach((g, i) => {
    if (!path.has(g)) return;
    if (wx.length && (i === 0 || c.generations[i - 1] !== g)) { wx.push(null); wy.push(null); wt.push(null); }
    wx.push(c.steps[i]); wy.push(c.values[i]); wt.push(label("winner's ancestry: member " + c.slot + ", step " + c.steps[i] + ": " + fmt(c.values[i])));
  }));
  if (wx.length) traces.push({x: wx, y: wy, text: wt, hoverinfo: "text", mode: "lines", name: "winner's ancestry", line: {width: 3.5, color: WIN}});
  const copies = d.copies || [], jx = [], jy = [], mx = [], my = [], mt = [];
  const at = {};
  d.curves.forEach(c => c.steps.forEach((s, i) => { at[c.slot + ":" + s] = c.values[i]; }));
  copies.forEach(k => {
    const landing = at[k.donor + ":" + k.step] ?? k.score_after;
    if (landing === null || landing === undefined) return;
    if (k.previous_step !== null && k.score_before !== null) { jx.push(k.previous_step, k.step, null); jy.push(k.score_before, landing, null); }
    mx.push(k.step); my.push(landing);
    mt.push(label("step " + k.step + ": member " + k.slot + " copied member " + k.donor +
                  (k.previous_step !== null && k.previous_step !== k.step ? " (its own last step was " + k.previous_step + ")" : "")));
  });
  if (jx.length) traces.push({x: jx, y: jy, mode: "lines", name: "copy (weights, not training)", hoverinfo: "skip",
                              line: {width: 1, dash: "dash", color: "rgba(90,90,90,0.7)"}, legendgroup: "copy"});
  if (mx.length) traces.push({x: mx, y: my, text: mt, hoverinfo: "text", mode: "markers", name: "copy", showlegend: !jx.length,
                              legendgroup: "copy", marker: {symbol: "diamond", size: 7, color: "rgba(60,60,60,0.8)"}});
  traces.push({x: d.best_so_far.steps, y: d.best_so_far.values, mode: "lines", name: "best so far (checkpointed)", line: {width: 2, color: "black", dash: "dot"},
               text: d.best_so_far.values.map((v, i) => label("best so far at step " + d.best_so_far.steps[i] + ": " + fmt(v))), hoverinfo: "text"});
  const w = winnerOf(d);
  if (w && w.score !== null) traces.push({x: [w.step], y: [w.score], mode: "markers", name: "winner", hoverinfo: "text",
    text: [label("winner: member " + w.slot + ", step " + w.step + ": " + fmt(w.score))], marker: {symbol: "star", size: 16, color: WIN, line: {color: "black", width: 1}}});
  const yaxis = {title: {text: label(d.metric + (d.mode === "min" ? " (lower is better)" : " (higher is better)"))}};
  if (d.y_range) { yaxis.range = d.y_range.slice(); yaxis.autorange = false; }
  const layout = {title: {text: label(d.metric + " of every member (click a line to pick it out; double-click resets the zoom)")},
                  xaxis: {title: {text: "step"}}, yaxis: yaxis, margin: {t: 40}, height: 460, hovermode: "closest",
                  legend: {itemclick: "toggle"}};
  if (plot("scores", traces, layout, finiteScores(d) ? null : WAITING)) bindHighlight("scores");
}
function bindHighlight(id) {
  const div = document.getElementById(id);
  if (div.poptrainBound) return;
  div.poptrainBound = true;
  div.on("plotly_click", e => {
    const slot = e.points.length ? e.points[0].data.meta : undefined;
    if (typeof slot !== "number") return;
    highlighted = highlighted === slot ? null : slot;
    applyHighlight();
  });
}
function applyHighlight() {
  ["scores", "schedules"].forEach(id => {
    const div = document.getElementById(id);
    if (!div.data) return;
    const indices = [], opacity = [];
    div.data.forEach((t, i) => { if (typeof t.meta === "number") { indices.push(i); opacity.push(highlighted === null ? 0.75 : t.meta === highlighted ? 1 : 0.08); } });
    if (indices.length) Plotly.restyle(div, {opacity: opacity}, indices);
  });
}

// --- schedules -----------------------------------------------------------------------------------
function paramInfo(d) { const m = {}; (d.params || []).forEach(p => { m[p.name] = p; }); return m; }
function drawSchedules(d) {
  const info = paramInfo(d), gens = {};
  d.tree.forEach(n => { gens[n.slot + ":" + n.start] = n; });
  const names = Object.keys(d.schedules).filter(n => d.schedules[n].some(s => numeric(s.value) !== null));
  const traces = [], rows = Math.max(names.length, 1);
  const layout = {height: Math.max(280, 220 * names.length), margin: {t: 40}, showlegend: false, hovermode: "closest",
                  title: {text: "hyperparameter schedules (red: the winner's ancestry)"}};
  names.forEach((name, i) => {
    const axis = i === 0 ? "" : String(i + 1), bySlot = {};
    d.schedules[name].forEach(s => {
      const v = numeric(s.value);
      if (v === null || s.end <= s.start) return;  // only steps trained: a copy is no stretch of training
      const g = gens[s.slot + ":" + s.start], t = bySlot[s.slot] = bySlot[s.slot] || {x: [], y: [], text: []};
      const hover = label("member " + s.slot + (g ? ", gen " + g.number : "") + ", steps " + s.start + "-" + s.end + ": " + name + " " + fmt(s.value));
      t.x.push(s.start, s.end, null); t.y.push(v, v, null); t.text.push(hover, hover, null);
    });
    Object.entries(bySlot).forEach(([slot, t]) => traces.push({x: t.x, y: t.y, text: t.text, hoverinfo: "text", mode: "lines", meta: Number(slot),
      name: label("member " + slot + ": " + name), line: {color: colour(Number(slot)), width: 1.2}, opacity: 0.75, xaxis: "x" + axis, yaxis: "y" + axis}));
    const bx = [], by = [];
    d.best_ancestry.forEach(s => { const v = numeric(s.value[name]); if (v !== null) { bx.push(s.start, s.end, null); by.push(v, v, null); } });
    traces.push({x: bx, y: by, mode: "lines", line: {color: WIN, width: 3.5}, xaxis: "x" + axis, yaxis: "y" + axis, name: label("best: " + name),
                 hoverinfo: "name+y"});
    const top = 1 - i / rows, bottom = 1 - (i + 1) / rows + 0.08 / rows;
    const p = info[name];
    layout["yaxis" + axis] = {title: {text: label(name)}, domain: [bottom, top - 0.03], type: p && p.log ? "log" : "linear"};
    layout["xaxis" + axis] = {anchor: "y" + axis, title: {text: i === names.length - 1 ? "step" : ""}, matches: i ? "x" : undefined};
  });
  if (plot("schedules", traces, layout, names.length ? null : "no numeric hyperparameters to draw")) { bindHighlight("schedules"); applyHighlight(); }
}

// --- family tree -----------------------------------------------------------------------------------
function drawLineage(d) {
  const scored = d.tree.filter(n => n.score !== null), unscored = d.tree.filter(n => n.score === null);
  const text = n => label("member " + n.slot + ", gen " + n.number + " (" + n.kind + (n.donor !== null ? " of member " + n.donor : "") +
    "), steps " + n.start + "-" + n.end + ", last " + d.metric + " " + fmt(n.score) + (n.on_winner_path ? ", the winner's ancestry" : "") +
    (n.survives === false ? ", line died out" : ""));
  const bars = (nodes, extra) => Object.assign({type: "bar", orientation: "h", y: nodes.map(n => n.slot), base: nodes.map(n => n.start),
    x: nodes.map(n => Math.max(n.end - n.start, 0.3)), width: 0.8, text: nodes.map(text), hoverinfo: "text", textposition: "none", showlegend: false}, extra);
  const marker = nodes => ({opacity: nodes.map(n => n.survives === false ? 0.25 : 1),
    line: {color: nodes.map(n => n.on_winner_path ? WIN : "rgba(0,0,0,0)"), width: nodes.map(n => n.on_winner_path ? 2.5 : 0)}});
  const traces = [
    bars(scored, {marker: Object.assign(marker(scored), {color: scored.map(n => n.score), colorscale: VIRIDIS, reversescale: d.mode === "min",
      showscale: true, colorbar: {title: {text: label("last " + d.metric)}, thickness: 14}})}),
    bars(unscored, {marker: Object.assign(marker(unscored), {color: "#ccc"})}),
  ];
  const copies = d.tree.filter(n => (n.kind === "exploit" || n.kind === "replace") && n.donor !== null);
  const span = Math.max(1, ...d.tree.map(n => n.end)), spread = span / 250, atStep = {}, ax = [], ay = [], tx = [], ty = [], sym = [], tt = [];
  copies.forEach(n => { (atStep[n.start] = atStep[n.start] || []).push(n); });
  Object.values(atStep).forEach(group => group.forEach((n, k) => {  // several copies at one step sit side by side
    const x = n.start + (k - (group.length - 1) / 2) * Math.min(spread, span / 60 / group.length);  // within a small band
    ax.push(x, x, null); ay.push(n.donor, n.slot, null);
    tx.push(x); ty.push(n.slot); sym.push(n.slot > n.donor ? "triangle-down" : "triangle-up");
    tt.push(label("step " + n.start + ": member " + n.slot + " copied member " + n.donor));
  }));
  traces.push({x: ax, y: ay, mode: "lines", hoverinfo: "skip", showlegend: false, line: {color: "rgba(200,0,0,0.45)", width: 1}});
  traces.push({x: tx, y: ty, text: tt, hoverinfo: "text", mode: "markers", showlegend: false, marker: {symbol: sym, size: 6, color: "rgba(200,0,0,0.8)"}});
  const height = Math.min(900, Math.max(320, 140 + 22 * d.population));
  plot("lineage", traces, {title: {text: "bars: generations by last score; red: copies; faded: died out"},
    xaxis: {title: {text: "step"}}, yaxis: {title: {text: "member"}, range: [d.population - 0.5, -0.5], autorange: false, dtick: d.population > 40 ? 8 : 1, zeroline: false},
    height: height, margin: {t: 40}, bargap: 0.2, barmode: "overlay", hovermode: "closest"}, d.tree.length ? null : WAITING);
}

// --- which hyperparameters mattered ---------------------------------------------------------------
function viridis(t) {
  const stops = VIRIDIS.map(s => [s[0], [1, 3, 5].map(i => parseInt(s[1].substr(i, 2), 16))]);
  for (let i = 1; i < stops.length; i++) if (t <= stops[i][0]) {
    const [a, ca] = stops[i - 1], [b, cb] = stops[i], f = (t - a) / (b - a);
    return "rgb(" + ca.map((c, j) => Math.round(c + f * (cb[j] - c))).join(",") + ")";
  }
  return "rgb(253,231,37)";
}
function drawParallel(d) {
  const ev = d.evaluations;
  if (!ev || !ev.columns || !ev.score || ev.score.filter(v => v !== null).length < 2) {
    plot("parallel", [], {}, ev ? "not enough evaluations yet" : "this report has no evaluations to compare"); return;
  }
  const axes = ev.columns.concat([{name: d.metric, log: false, labels: null, values: ev.score}]);
  const scale = axes.map(a => {  // each axis normalised to 0..1 (in log where the parameter is log-scaled)
    const t = v => (v === null || (a.log && v <= 0)) ? null : a.log ? Math.log10(v) : v;
    const vs = a.values.map(t).filter(v => v !== null);
    const lo = Math.min(...vs), hi = Math.max(...vs);
    return {t: t, lo: lo, hi: hi, f: v => { const x = t(v); return x === null ? null : hi === lo ? 0.5 : (x - lo) / (hi - lo); }};
  });
  const scores = ev.score.filter(v => v !== null), lo = Math.min(...scores), hi = Math.max(...scores), bins = 8, groups = [];
  for (let b = 0; b < bins; b++) groups.push({x: [], y: [], text: []});
  ev.score.forEach((s, r) => {
    if (s === null) return;
    let t = hi === lo ? 1 : (s - lo) / (hi - lo);
    if (d.mode === "min") t = 1 - t;
    const g = groups[Math.min(bins - 1, Math.floor(t * bins))], hover = label("member " + ev.slot[r] + ", step " + ev.step[r] + ": " + fmt(s));
    axes.forEach((a, i) => { g.x.push(i); g.y.push(scale[i].f(a.values[r])); g.text.push(hover); });
    g.x.push(null); g.y.push(null); g.text.push(null);
  });
  const traces = groups.map((g, b) => ({x: g.x, y: g.y, text: g.text, hoverinfo: "text", mode: "lines", showlegend: false,
    line: {width: 1, color: viridis((b + 0.5) / bins)}, opacity: 0.35 + 0.5 * b / bins}));
  const lx = [], ly = [], lt = [];  // each axis's own tick labels
  axes.forEach((a, i) => {
    const s = scale[i];
    if (a.labels) a.labels.forEach((name, k) => { lx.push(i); ly.push(s.f(k)); lt.push(label(name)); });
    else [0, 0.25, 0.5, 0.75, 1].forEach(f => {
      const x = s.lo + f * (s.hi - s.lo);
      if (!isFinite(x)) return;
      lx.push(i); ly.push(s.hi === s.lo ? 0.5 : f); lt.push(label(fmt(a.log ? Math.pow(10, x) : x)));
    });
  });
  traces.push({x: lx, y: ly, text: lt, mode: "markers+text", textposition: "middle right", hoverinfo: "skip", showlegend: false,
               marker: {symbol: "line-ew-open", size: 8, color: "#444"}, textfont: {size: 10, color: "#333"}});
  traces.push({x: [null], y: [null], mode: "markers", hoverinfo: "skip", showlegend: false,  // carries the colour bar
               marker: {color: [lo], cmin: lo, cmax: hi, colorscale: VIRIDIS, reversescale: d.mode === "min", showscale: true,
                        colorbar: {title: {text: label(d.metric)}, thickness: 14}}});
  plot("parallel", traces, {title: {text: "every evaluation: its hyperparameters and score (one line each, coloured by score)"},
    height: 420, margin: {t: 40}, hovermode: "closest",
    xaxis: {tickvals: axes.map((a, i) => i), ticktext: axes.map(a => label(a.name + (a.log ? " (log)" : ""))), range: [-0.2, axes.length - 0.4],
            showgrid: true, gridcolor: "#999", zeroline: false},
    yaxis: {visible: false, range: [-0.05, 1.05]}}, null);
}
function drawImportance(d) {
  const imp = d.importance, caption = document.getElementById("importance-method");
  if (!imp) {
    caption.textContent = (d.summary && d.summary.importance) || "Not computed: it needs at least 10 scored evaluations and two hyperparameters.";
    plot("importance", [], {}, "no importance for this run");
    return;
  }
  caption.textContent = imp.method;
  const names = Object.keys(imp.values).reverse();
  plot("importance", [{type: "bar", orientation: "h", y: names.map(label), x: names.map(n => imp.values[n]), marker: {color: "#1f77b4"},
    text: names.map(n => fmt(imp.values[n])), textposition: "auto", hoverinfo: "y+x"}],
    {title: {text: "which hyperparameters mattered"}, height: Math.max(200, 60 + 36 * names.length), margin: {t: 40, l: 140},
     xaxis: {title: {text: "share of importance"}, range: [0, 1]}}, null);
}

// --- tables -----------------------------------------------------------------------------------------
function row(cells, className) {
  // cells: [tag, content, class?]; content is set as text (or appended when a node): data never becomes markup
  const tr = document.createElement("tr");
  if (className) tr.className = className;
  cells.forEach(([tag, content, cls]) => {
    const cell = document.createElement(tag);
    if (content instanceof Node) cell.appendChild(content); else cell.textContent = String(content);
    if (cls) cell.className = cls;
    tr.appendChild(cell);
  });
  return tr;
}
function fill(id, rows) { const table = document.getElementById(id); table.replaceChildren(); rows.forEach(r => table.appendChild(r)); }
function change(r) {
  const old = r.old || {}, now = r.new || {}, ops = r.changes || {};
  const keys = [...new Set([...Object.keys(old), ...Object.keys(now), ...Object.keys(ops)])];
  if (!r.old && !r.new) return fmt(ops);
  return keys.map(k => k + " " + fmt(old[k]) + " → " + fmt(now[k]) + (ops[k] ? " (" + ops[k] + ")" : "")).join("; ");
}
function fillTables(d) {
  const s = d.summary, w = winnerOf(d);
  const extra = Object.entries(s).filter(([k]) => !k.startsWith("best") && k !== "settings");
  fill("summary", [
    row([["th", "run"], ["td", d.run + " (" + d.state + ")"]]),
    row([["th", "members"], ["td", d.population, "members"]]),
    row([["th", "winner"], ["td", w ? "member " + w.slot + ": " + d.metric + " = " + fmt(w.score) + " at step " + fmt(w.step) : WAITING]]),
    row([["th", "its metrics"], ["td", fmt(s.best_metrics)]]),
    row([["th", "its hyperparameters"], ["td", fmt(s.best_hparams)]]),
    ...extra.map(([k, v]) => row([["th", k.replace(/_/g, " ")], ["td", k === "wall_seconds" && typeof v === "number" ? duration(v) : fmt(v)]])),
  ]);
  const settings = d.settings_rows || Object.entries(s.settings || {}).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : fmt(v)]);
  fill("settings", settings.map(([k, v]) => row([["th", k], ["td", v]])));
  fill("ancestry", [row(["steps", "member", "hyperparameters"].map(h => ["th", h])),
    ...d.best_ancestry.map(a => row([["td", a.start + "-" + a.end], ["td", a.slot], ["td", fmt(a.value)]]))]);
  fill("decisions", [row(["step", "member", "decision", "donor", "changes (before → after)", "score before", "after"].map(h => ["th", h])),
    ...d.decisions.map(r => row([["td", r.step], ["td", r.slot], ["td", r.kind], ["td", fmt(r.donor)], ["td", change(r)],
                                 ["td", fmt(r.score_before)], ["td", fmt(r.score_after)]], "decision"))]);
  fillMembers(d);
  document.getElementById("status").textContent = "state: " + d.state;  // the dashboard says below whether it updates
}
const MEMBER_COLUMNS = [["slot", "member"], ["state", "state"], ["step", "step"], ["generation", "generation"],
                        ["last_score", "last score"], ["best_score", "best score"], ["hparams", "hyperparameters"]];
function fillMembers(d) {
  const members = (d.members || []).slice(), {key, descending} = memberSort;
  members.sort((a, b) => {
    const x = a[key], y = b[key];
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    const c = typeof x === "number" && typeof y === "number" ? x - y : fmt(x).localeCompare(fmt(y));
    return descending ? -c : c;
  });
  const head = row(MEMBER_COLUMNS.map(([k, h]) => ["th", h + (k === key ? (descending ? " ▼" : " ▲") : ""), "sortable"]));
  Array.from(head.children).forEach((th, i) => th.addEventListener("click", () => {
    const k = MEMBER_COLUMNS[i][0];
    memberSort = {key: k, descending: memberSort.key === k ? !memberSort.descending : k.endsWith("score") && d.mode === "max"};
    fillMembers(d);
  }));
  fill("members", [head, ...members.map(m => row(MEMBER_COLUMNS.map(([k]) => ["td", fmt(m[k])])))]);
}
function render(d) {
  fillTables(d); drawWinner(d); drawProgress(d);
  drawScores(d); drawSchedules(d); drawLineage(d); drawParallel(d); drawImportance(d);
  window.poptrainRendered = (window.poptrainRendered || 0) + 1;
}
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } h1 { margin-bottom: 0.2em; } #status, #live, #progress { color: #666; margin: 0.2em 0; }
#winner { border: 2px solid #d62728; border-radius: 6px; padding: 0.6em 1.2em; margin: 1em 0 1.5em; background: #fff8f7; }
#winner .headline { font-size: 1.45em; font-weight: 600; margin: 0.3em 0; }
#winner ul { margin: 0.3em 0; } #winner h3 { margin: 0.6em 0 0.2em; font-size: 1em; }
#winner ol.story { margin: 0.2em 0; } #winner dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 1em; }
#winner dt { color: #666; } #winner dd { margin: 0; } code { background: #f0f0f0; padding: 1px 4px; user-select: all; }
th.sortable { cursor: pointer; } p.waiting { color: #888; font-style: italic; padding: 2em 0; }
.caption { color: #555; font-size: 0.9em; margin: 0 0 1.5em; } .columns { display: flex; gap: 2em; flex-wrap: wrap; }
"""

# how the page gets its data: inline (a report file) or polled from the dashboard until the run ends
_POLL = """
const LIVE = document.getElementById("live");
async function refresh() {
  let d;
  try {
    const r = await fetch(DATA_URL, {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    d = await r.json();
  } catch (e) {
    LIVE.textContent = "cannot read the run (" + e.message + "); trying again in 2 s";
    setTimeout(refresh, 2000);
    return;
  }
  render(d);
  if (d.state === "running" || d.state === "created") {
    LIVE.textContent = d.state === "running" ? "live: updating every 2 s" : "waiting for the run to start";
    setTimeout(refresh, 2000);
  } else {
    LIVE.textContent = "The run ended (" + d.state + "); this page no longer updates. Reload it to read the run again.";
  }
}
refresh();"""


def page(title: str, body_data: str, *, refresh_url: str | None = None, nav: str = "") -> str:
    """The report page: inline plotly.js, the renderer, and either the data inline (``body_data``,
    report JSON) or a URL the page polls every 2 seconds while the run is running (the
    dashboard). Both are escaped for the script they sit in; ``nav`` is HTML and must not carry data."""
    from poptrain.report.bundle import plotly_js

    script, _ = plotly_js()
    loader = (
        f"const data = {_inside_script(body_data)};\nrender(data);"
        if refresh_url is None
        else f"const DATA_URL = {_inside_script(json.dumps(refresh_url))};" + _POLL
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{STYLE}</style>
<script>{script}</script></head>
<body>{nav}
<h1>{html.escape(title)}</h1><p id="status"></p><p id="progress"></p><p id="live"></p>
<section id="winner"></section>
<h2>Scores</h2><div id="scores"></div>
<h2>Hyperparameter schedules</h2><div id="schedules"></div>
<h2>Family tree</h2><div id="lineage"></div>
<h2>Which hyperparameters mattered</h2><div id="parallel"></div>
<div id="importance"></div><p class="caption" id="importance-method"></p>
<h2>The winner's schedule</h2><table id="ancestry"></table>
<h2>Summary</h2><table id="summary"></table>
<h2>Settings</h2><table id="settings"></table>
<h2>Members</h2><p class="caption">Click a column's header to sort by it.</p><table id="members"></table>
<h2>Decisions</h2><table id="decisions"></table>
<script>{RENDER_JS}
{loader}</script>
</body></html>"""


def report_json(data: ReportData) -> str:
    """``data`` as strict JSON (NaN and infinities become null)."""
    return json.dumps(_clean(data.to_dict()), allow_nan=False, default=str)


def report_html(data: ReportData) -> str:
    """A self-contained HTML report of ``data``."""
    return page(f"poptrain report: {data.run}", report_json(data))


# JSON text placed in a <script> element: "<", ">" and "&" (only ever inside JSON strings) and the
# two line separators JavaScript once treated as line ends, as \u escapes, so that no data can
# close the script, open a comment in it, or end a string early.
_SCRIPT_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _inside_script(json_text: str) -> str:
    """``json_text`` made safe to embed in a ``<script>`` element (same value when parsed)."""
    return json_text.translate(_SCRIPT_ESCAPES)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
