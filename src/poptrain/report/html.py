"""The HTML view of a ``ReportData``: one self-contained page (plotly.js inlined, no server,
no internet) drawn in the browser from the report's JSON. The dashboard serves the same page
and refreshes it from ``/api/runs/NAME``."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from poptrain.report.data import ReportData

RENDER_JS = r"""
function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
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
function drawScores(d) {
  const traces = d.curves.map(c => ({x: c.steps, y: c.values, mode: "lines", name: "member " + c.slot,
                                     line: {width: 1}, opacity: 0.7}));
  traces.push({x: d.best_so_far.steps, y: d.best_so_far.values, mode: "lines", name: "best so far",
               line: {width: 3, color: "black"}});
  const at = {};
  d.curves.forEach(c => c.steps.forEach((s, i) => { at[c.slot + ":" + s] = c.values[i]; }));
  const marks = d.exploits.filter(e => (e[0] + ":" + e[1]) in at);
  traces.push({x: marks.map(e => e[1]), y: marks.map(e => at[e[0] + ":" + e[1]]), mode: "markers", name: "exploit",
               marker: {symbol: "triangle-down", color: "red", size: 8},
               text: marks.map(e => label("member " + e[0] + " copied " + e[2])), hoverinfo: "text+x+y"});
  Plotly.react("scores", traces, {title: {text: label(d.metric + " of every member")}, xaxis: {title: {text: "step"}},
               yaxis: {title: {text: label(d.metric)}}, margin: {t: 40}, height: 420});
}
function drawSchedules(d) {
  const names = Object.keys(d.schedules).filter(n => d.schedules[n].some(s => numeric(s.value) !== null));
  const traces = [], layout = {height: Math.max(260, 200 * names.length), margin: {t: 40}, showlegend: false,
                               title: {text: "hyperparameter schedules (red: the best model's ancestry)"}};
  names.forEach((name, i) => {
    const axis = i === 0 ? "" : String(i + 1);
    const xs = [], ys = [];
    d.schedules[name].forEach(s => { const v = numeric(s.value); if (v !== null) { xs.push(s.start, s.end, null); ys.push(v, v, null); } });
    traces.push({x: xs, y: ys, mode: "lines", line: {color: "rgba(120,120,120,0.4)", width: 1}, xaxis: "x" + axis, yaxis: "y" + axis, name: label(name)});
    const bx = [], by = [];
    d.best_ancestry.forEach(s => { const v = numeric(s.value[name]); if (v !== null) { bx.push(s.start, s.end); by.push(v, v); } });
    traces.push({x: bx, y: by, mode: "lines", line: {color: "red", width: 3}, xaxis: "x" + axis, yaxis: "y" + axis, name: label("best: " + name)});
    const top = 1 - i / names.length, bottom = 1 - (i + 1) / names.length + 0.06 / names.length;
    layout["yaxis" + axis] = {title: {text: label(name)}, domain: [bottom, top - 0.02]};
    layout["xaxis" + axis] = {anchor: "y" + axis, title: {text: i === names.length - 1 ? "step" : ""}};
  });
  Plotly.react("schedules", traces, layout);
}
function drawLineage(d) {
  const scores = d.tree.map(n => n.score).filter(v => v !== null);
  const low = Math.min(...scores), high = Math.max(...scores);
  const traces = d.tree.map(n => ({x: [n.start, Math.max(n.end, n.start + 0.3)], y: [n.slot, n.slot], mode: "lines",
    line: {width: 8, color: "#ccc"},
    hoverinfo: "text", text: label("member " + n.slot + ", generation " + n.number + " (" + n.kind +
      (n.donor !== null ? " of " + n.donor : "") + "), steps " + n.start + "-" + n.end + ", last " + d.metric + " " + fmt(n.score)),
    showlegend: false}));
  const scale = v => { if (v === null || high === low) return 0.5; const t = (v - low) / (high - low); return d.mode === "min" ? 1 - t : t; };
  traces.forEach((t, i) => { const s = scale(d.tree[i].score); t.line.color = d.tree[i].score === null ? "#ccc" :
    "rgb(" + Math.round(68 + 185 * s) + "," + Math.round(1 + 230 * s) + "," + Math.round(84 - 50 * s) + ")"; });
  const arrows = d.tree.filter(n => (n.kind === "exploit" || n.kind === "replace") && n.donor !== null).map(n => ({x: n.start, y: n.slot, ax: n.start,
    ay: n.donor, xref: "x", yref: "y", axref: "x", ayref: "y", showarrow: true, arrowhead: 2, arrowcolor: "rgba(200,0,0,0.6)"}));
  Plotly.react("lineage", traces, {title: {text: "population development: bars coloured by score (yellow best), arrows from donors"},
    xaxis: {title: {text: "step"}}, yaxis: {title: {text: "member"}, autorange: "reversed", dtick: 1}, annotations: arrows,
    height: Math.max(280, 26 * d.population + 120), margin: {t: 40}});
}
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
function fillTables(d) {
  const s = d.summary;
  const settings = document.createElement("code");
  settings.textContent = JSON.stringify(s.settings);
  fill("summary", [
    row([["th", "run"], ["td", d.run + " (" + d.state + ")"]]),
    row([["th", "members"], ["td", d.population, "members"]]),
    row([["th", "best member"], ["td", fmt(s.best_slot) + ": " + d.metric + " = " + fmt(s.best_score) + " at step " + fmt(s.best_step)]]),
    row([["th", "its metrics"], ["td", fmt(s.best_metrics)]]),
    row([["th", "its hyperparameters"], ["td", fmt(s.best_hparams)]]),
    ...Object.entries(s).filter(([k]) => !k.startsWith("best") && k !== "settings").map(([k, v]) => row([["th", k.replace(/_/g, " ")], ["td", fmt(v)]])),
    row([["th", "settings"], ["td", settings]]),
  ]);
  fill("ancestry", [row(["steps", "member", "hyperparameters"].map(h => ["th", h])),
    ...d.best_ancestry.map(a => row([["td", a.start + "-" + a.end], ["td", a.slot], ["td", fmt(a.value)]]))]);
  fill("decisions", [row(["step", "member", "decision", "donor", "changes", "score before", "after"].map(h => ["th", h])),
    ...d.decisions.map(r => row([["td", r.step], ["td", r.slot], ["td", r.kind], ["td", fmt(r.donor)], ["td", fmt(r.changes)],
                                 ["td", fmt(r.score_before)], ["td", fmt(r.score_after)]], "decision"))]);
  document.getElementById("status").textContent = d.state === "running" ? "live: updating" : d.state;
}
function render(d) { fillTables(d); drawScores(d); drawSchedules(d); drawLineage(d); window.poptrainRendered = (window.poptrainRendered || 0) + 1; }
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } h1 { margin-bottom: 0.2em; } #status { color: #666; }
"""


def page(title: str, body_data: str, *, refresh_url: str | None = None, nav: str = "") -> str:
    """The report page: inline plotly.js, the renderer, and either the data inline (``body_data``,
    report JSON) or a URL the page polls every 2 seconds (the dashboard). Both are escaped for
    the script they sit in; ``nav`` is HTML and must not carry data."""
    from plotly.offline import get_plotlyjs

    loader = (
        f"const data = {_inside_script(body_data)};\nrender(data);"
        if refresh_url is None
        else (
            f"async function refresh() {{ const r = await fetch({_inside_script(json.dumps(refresh_url))}); if (r.ok) render(await r.json()); }}\n"
            "refresh(); setInterval(refresh, 2000);"
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{STYLE}</style>
<script>{get_plotlyjs()}</script></head>
<body>{nav}
<h1>{html.escape(title)}</h1><p id="status"></p>
<h2>Summary</h2><table id="summary"></table>
<h2>Scores</h2><div id="scores"></div>
<h2>Hyperparameter schedules</h2><div id="schedules"></div>
<h2>The best model's schedule</h2><table id="ancestry"></table>
<h2>Family tree</h2><div id="lineage"></div>
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
