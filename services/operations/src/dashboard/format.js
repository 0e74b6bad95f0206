// Names, times and a small DOM builder shared by the pages.

export const SAGA_STATUSES = [
  "running", "parked", "completed", "compensating", "compensated", "failed", "cancelled",
];
export const FINAL_STATUSES = ["completed", "compensated", "failed", "cancelled"];
export const TYPES = ["birth", "death", "change-of-address", "driving-exam-passed"];

const TYPE_LABELS = {
  birth: "Birth",
  death: "Death",
  "change-of-address": "Change of address",
  "driving-exam-passed": "Driving exam passed",
};

/** `SAGA_STATUS_RUNNING` → `running`. */
export function sagaStatus(value) {
  return String(value || "SAGA_STATUS_UNSPECIFIED").replace(/^SAGA_STATUS_/, "").toLowerCase();
}

/** `STEP_STATUS_FAILED` → `failed`. */
export function stepStatus(value) {
  return String(value || "STEP_STATUS_PENDING").replace(/^STEP_STATUS_/, "").toLowerCase();
}

/** `LIFE_EVENT_TYPE_CHANGE_OF_ADDRESS` → `change-of-address`. */
export function lifeEventType(value) {
  return String(value || "LIFE_EVENT_TYPE_UNSPECIFIED")
    .replace(/^LIFE_EVENT_TYPE_/, "")
    .toLowerCase()
    .replace(/_/g, "-");
}

export function typeLabel(type) {
  return TYPE_LABELS[type] || type;
}

export function statusLabel(status) {
  return status ? status[0].toUpperCase() + status.slice(1) : "";
}

const TIME = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});

export function time(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : TIME.format(d);
}

/** A duration in milliseconds, short: `850 ms`, `12.4 s`, `3 min 5 s`, `2 h 10 min`. */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** How long ago, short; a time ahead of this browser's clock (a saga clock moved ahead) as is. */
export function ago(value) {
  if (!value) return "";
  const ms = Date.now() - new Date(value).getTime();
  if (Number.isNaN(ms)) return String(value);
  return ms < 0 ? time(value) : `${duration(ms)} ago`;
}

/**
 * Builds an element: `h("a", { href, class: "x", dataset: { testid: "y" } }, "text", child)`.
 * Text is always text (never parsed as HTML).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") {
      for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
    } else if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function badge(status, testid) {
  return h("span", { class: `badge s-${status}`, dataset: testid ? { testid } : undefined },
    statusLabel(status));
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "";
}
