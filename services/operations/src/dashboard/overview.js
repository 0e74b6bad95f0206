// The overview: sagas counted by status and type, throughput, the slowest handlers.

import * as api from "./api.js";
import {
  h, s, sagaStatus, lifeEventType, typeLabel, statusLabel, duration,
  SAGA_STATUSES, TYPES,
} from "./format.js";

export async function render(main) {
  const body = h("div", { "data-testid": "overview" });
  main.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Overview"),
        h("p", { class: "muted" }, "Every saga the operations service knows of, as it changes."))),
    body,
  );
  let pending = null;
  const refresh = async () => {
    pending = null;
    const view = await api.stats();
    draw(body, view);
  };
  const soon = () => {
    if (!pending) pending = setTimeout(() => refresh().catch(console.warn), 500);
  };
  await refresh();
  api.follow({}, { saga: soon, lagged: soon });
  // The throughput's current minute moves on even when no saga changes.
  setInterval(() => refresh().catch(console.warn), 15000);
}

function draw(body, view) {
  const counts = view.stats?.by_status || [];
  const byStatus = Object.fromEntries(SAGA_STATUSES.map((st) => [st, 0]));
  const byType = {};
  let total = 0;
  for (const c of counts) {
    const n = Number(c.count || 0);
    const st = sagaStatus(c.status);
    const ty = lifeEventType(c.type);
    byStatus[st] = (byStatus[st] || 0) + n;
    byType[ty] ??= {};
    byType[ty][st] = (byType[ty][st] || 0) + n;
    total += n;
  }
  const cards = h("section", { class: "cards", "aria-label": "Sagas by status" },
    h("a", { class: "card s-total", href: "/sagas", "data-testid": "count-total", "data-count": total },
      h("div", { class: "count" }, total), h("div", { class: "label" }, "All sagas")),
    SAGA_STATUSES.map((st) =>
      h("a", { class: `card s-${st}`, href: `/sagas?status=${st}`, "data-testid": `count-${st}`, "data-count": byStatus[st] || 0 },
        h("div", { class: "count" }, byStatus[st] || 0),
        h("div", { class: "label" }, statusLabel(st)))),
  );

  const types = TYPES.filter((t) => byType[t]).concat(Object.keys(byType).filter((t) => !TYPES.includes(t)));
  const table = h("section", { class: "panel", "aria-labelledby": "by-type" },
    h("h2", { id: "by-type" }, "By type and status"),
    types.length === 0
      ? h("p", { class: "empty" }, "No sagas yet.")
      : h("table", { "data-testid": "counts-by-type" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Type"),
            SAGA_STATUSES.map((st) => h("th", { scope: "col", class: "num" }, statusLabel(st))),
            h("th", { scope: "col", class: "num" }, "Total"))),
          h("tbody", {}, types.map((t) => {
            const row = byType[t];
            const sum = Object.values(row).reduce((a, b) => a + b, 0);
            return h("tr", { "data-testid": `type-${t}` },
              h("th", { scope: "row" }, h("a", { href: `/sagas?type=${t}` }, typeLabel(t))),
              SAGA_STATUSES.map((st) => h("td", { class: "num" },
                row[st] ? h("a", { href: `/sagas?type=${t}&status=${st}` }, row[st]) : h("span", { class: "muted" }, "0"))),
              h("td", { class: "num" }, sum));
          }))),
  );

  const grid = h("div", { class: "grid" }, throughput(view.throughput), slowest(view.stats?.step_latency || []));
  body.replaceChildren(cards, table, grid);
}

function throughput(t) {
  const minutes = t?.minutes || [];
  const panel = h("section", { class: "panel", "aria-labelledby": "throughput", "data-testid": "throughput" },
    h("h2", { id: "throughput" }, "Throughput"),
    h("p", { class: "muted" },
      t?.per_minute === null || t?.per_minute === undefined
        ? "Sagas finished per minute: counting has just begun."
        : `${t.per_minute.toFixed(1)} sagas finished per minute over the last ${Math.min(minutes.length, t.window_minutes)} minutes.`));
  if (minutes.length === 0) return panel;
  const width = 480;
  const height = 140;
  const pad = { left: 30, bottom: 20, top: 8 };
  const max = Math.max(1, ...minutes.map((m) => m.finished));
  const slots = Math.max(minutes.length, 15);
  const w = (width - pad.left) / slots;
  const plot = height - pad.bottom - pad.top;
  const svg = s("svg", { class: "bars", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Sagas finished per minute: ${minutes.map((m) => m.finished).join(", ")}` },
  s("line", { x1: pad.left, x2: width, y1: height - pad.bottom, y2: height - pad.bottom }),
  s("text", { x: pad.left - 6, y: pad.top + 10, "text-anchor": "end" }, max),
  s("text", { x: pad.left - 6, y: height - pad.bottom, "text-anchor": "end" }, 0),
  minutes.map((m, i) => {
    const bh = (m.finished / max) * plot;
    const x = pad.left + (slots - minutes.length + i) * w;
    const label = new Date(m.minute).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    return s("g", {},
      s("rect", { x: x + 2, y: height - pad.bottom - bh, width: Math.max(1, w - 4), height: Math.max(bh, m.finished ? 1 : 0),
        class: m.partial ? "partial" : "" },
      s("title", {}, `${label}: ${m.finished} finished${m.partial ? " (minute still going on)" : ""}`)),
      (minutes.length - 1 - i) % 3 === 0
        ? s("text", { x: Math.min(x + w / 2, width - 2), y: height - 5,
          "text-anchor": i === minutes.length - 1 ? "end" : "middle" }, label) : null);
  }));
  panel.append(svg);
  return panel;
}

function slowest(latencies) {
  const rows = [...latencies].sort((a, b) => (b.p95_ms || 0) - (a.p95_ms || 0)).slice(0, 8);
  return h("section", { class: "panel", "aria-labelledby": "slowest", "data-testid": "slowest-handlers" },
    h("h2", { id: "slowest" }, "Slowest handlers"),
    rows.length === 0
      ? h("p", { class: "empty" }, "No step has finished yet.")
      : h("table", {},
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Handler"),
            h("th", { scope: "col", class: "num" }, "p50"),
            h("th", { scope: "col", class: "num" }, "p95"),
            h("th", { scope: "col", class: "num" }, "p99"))),
          h("tbody", {}, rows.map((r) => h("tr", {},
            h("td", { class: "mono" }, h("a", { href: `/sagas?handler=${encodeURIComponent(r.handler)}` }, r.handler)),
            h("td", { class: "num" }, duration(r.p50_ms || 0)),
            h("td", { class: "num" }, duration(r.p95_ms || 0)),
            h("td", { class: "num" }, duration(r.p99_ms || 0)))))),
  );
}

