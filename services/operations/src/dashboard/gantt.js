// A saga's chart as SVG: a row per step, a bar per attempt, wait or compensation, coloured by
// the state it ended in; diamonds for what happened at an instant (an operator's action, an
// incident), saga-wide marks on the top line.

import { s, h, duration, time } from "./format.js";

const ROW = 30;
const LABEL = 190;
const AXIS = 26;
const WIDTH = 1000;
const RIGHT = 16;

export const STATES = [
  ["running", "Running"], ["waiting", "Waiting"], ["succeeded", "Succeeded"], ["failed", "Failed"],
  ["skipped", "Skipped"], ["compensating", "Compensating"], ["compensated", "Compensated"],
  ["abandoned", "Abandoned"],
];

function ticks(span) {
  const steps = [100, 250, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000,
    600000, 900000, 1800000, 3600000, 7200000, 21600000, 43200000, 86400000, 604800000];
  return steps.find((st) => span / st <= 8) || span / 8;
}

export function gantt(chart) {
  const start = chart.start ? new Date(chart.start).getTime() : Date.now();
  const end = Math.max(chart.end ? new Date(chart.end).getTime() : start, start + 1000);
  const span = end - start;
  const plot = WIDTH - LABEL - RIGHT;
  const x = (t) => LABEL + ((new Date(t).getTime() - start) / span) * plot;
  const rows = chart.rows || [];
  const height = AXIS + ROW * (rows.length + 1) + 6;
  const tick = ticks(span);
  const axis = [];
  for (let t = 0; t <= span + 1; t += tick) {
    const px = LABEL + (t / span) * plot;
    axis.push(s("line", { x1: px, x2: px, y1: AXIS - 4, y2: height - 4 }),
      s("text", { x: px, y: AXIS - 10, "text-anchor": "middle" }, `+${duration(t)}`));
  }
  const markShape = (m, cy) => {
    const cx = x(m.at);
    const r = 6;
    const label = [m.label, m.actor && `by ${m.actor}`, m.reason && `: ${m.reason}`].filter(Boolean).join(" ");
    return s("path", {
      class: `mark m-${m.kind}`,
      d: `M${cx} ${cy - r} L${cx + r} ${cy} L${cx} ${cy + r} L${cx - r} ${cy} Z`,
      "data-testid": `chart-mark-${m.kind}`,
      "data-label": m.label,
    }, s("title", {}, `${time(m.at)} — ${label}`));
  };
  const body = [];
  // The saga's own line: marks for the saga as a whole.
  const sagaY = AXIS;
  body.push(s("rect", { class: "row-bg", x: 0, y: sagaY, width: WIDTH, height: ROW }),
    s("text", { x: 8, y: sagaY + ROW / 2 + 4, "font-weight": "600" }, "saga"));
  for (const m of chart.marks || []) body.push(markShape(m, sagaY + ROW / 2));
  rows.forEach((row, i) => {
    const y = AXIS + ROW * (i + 1);
    const g = s("g", { "data-testid": "chart-row", "data-step": row.step_id, "data-status": row.status },
      s("rect", { class: "row-bg", x: 0, y, width: WIDTH, height: ROW }),
      s("text", { x: 8, y: y + ROW / 2 + 4 }, row.step_id, s("title", {}, `${row.step_id} (${row.handler || "no handler"}): ${row.status}`)));
    for (const bar of row.bars || []) {
      const x1 = x(bar.start);
      const x2 = x(bar.end || chart.end || bar.start);
      const label = `${row.step_id}: ${bar.kind.replace("-", " ")} ${bar.attempt}, ${bar.state}` +
        `, ${time(bar.start)}${bar.end ? ` – ${time(bar.end)} (${duration(new Date(bar.end) - new Date(bar.start))})` : ", still going on"}` +
        (bar.until ? `, due ${time(bar.until)}` : "") + (bar.note ? ` — ${bar.note}` : "");
      g.append(s("rect", {
        class: `bar s-${bar.state} k-${bar.kind}${bar.end ? "" : " open"}`,
        x: x1, y: y + 7, width: Math.max(3, x2 - x1), height: ROW - 14, rx: 3,
        "data-testid": "chart-bar", "data-state": bar.state, "data-kind": bar.kind,
      }, s("title", {}, label)));
    }
    for (const m of row.marks || []) g.append(markShape(m, y + ROW / 2));
    body.push(g);
  });
  if (chart.open) {
    const nx = x(chart.end || start);
    body.push(s("line", { class: "now", x1: nx, x2: nx, y1: AXIS - 4, y2: height - 4 }));
  }
  const svg = s("svg", {
    class: "gantt", viewBox: `0 0 ${WIDTH} ${height}`, role: "img",
    "aria-labelledby": "chart-title chart-desc", "data-testid": "saga-chart",
  },
  s("title", { id: "chart-title" }, "The saga's steps over time"),
  s("desc", { id: "chart-desc" }, rows.map((r) => `${r.step_id}: ${r.status}, ${r.attempts} attempt${r.attempts === 1 ? "" : "s"}`).join("; ")),
  s("g", { class: "axis" }, axis), body);
  const legend = h("ul", { class: "legend", "aria-label": "Legend" },
    STATES.map(([st, label]) => h("li", {}, h("span", { class: `swatch s-${st}`, "aria-hidden": "true" }), label)),
    h("li", {}, h("span", { class: "swatch diamond", "aria-hidden": "true" }), "Operator's action or event"));
  return h("div", {}, h("div", { class: "chart-wrap" }, svg), legend);
}
