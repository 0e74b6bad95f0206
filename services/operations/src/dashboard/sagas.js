// The saga list: filters (kept in the address, so a filtered list can be shared), pages, and
// rows that change as the sagas do.

import * as api from "./api.js";
import {
  h, badge, sagaStatus, stepStatus, lifeEventType, typeLabel, statusLabel, time, ago, shortId,
  SAGA_STATUSES, TYPES,
} from "./format.js";

const FILTERS = ["type", "status", "municipality", "handler", "person", "since"];
const PAGE_SIZE = 50;

function currentFilters() {
  const q = new URLSearchParams(location.search);
  return Object.fromEntries(FILTERS.map((f) => [f, q.get(f) || ""]));
}

function select(name, label, options, value) {
  const id = `filter-${name}`;
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    h("select", { id, name, "data-testid": id },
      h("option", { value: "" }, "Any"),
      options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))));
}

function input(name, label, value, placeholder) {
  const id = `filter-${name}`;
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    h("input", { id, name, value, placeholder, "data-testid": id, autocomplete: "off" }));
}

export async function render(main) {
  let filters = currentFilters();
  const form = h("form", { class: "filters panel", role: "search", "aria-label": "Filter the sagas", "data-testid": "filters" },
    select("type", "Type", TYPES.map((t) => [t, typeLabel(t)]), filters.type),
    select("status", "Status", SAGA_STATUSES.map((st) => [st, statusLabel(st)]), filters.status),
    input("municipality", "Municipality (NIS)", filters.municipality, "44021"),
    input("handler", "Handler", filters.handler, "magda.household"),
    input("person", "Person (INSZ)", filters.person, "11 digits"),
    input("since", "Started within", filters.since, "2h, 7d or a date"),
    h("div", { class: "actions" },
      h("button", { class: "button primary", type: "submit", "data-testid": "filter-apply" }, "Apply"),
      h("button", { class: "button", type: "reset", "data-testid": "filter-clear" }, "Clear")));
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite", "data-testid": "saga-count" });
  const tbody = h("tbody", { "data-testid": "saga-rows" });
  const table = h("table", { "data-testid": "saga-table" },
    h("caption", { class: "muted" }, ""),
    h("thead", {}, h("tr", {},
      ["Saga", "Type", "Status", "Current steps", "Municipality", "Person", "Started", "Updated"]
        .map((c) => h("th", { scope: "col" }, c)))),
    tbody);
  const more = h("button", { class: "button", type: "button", hidden: true, "data-testid": "load-more" }, "Load more");
  main.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Sagas"), status)),
    form,
    h("section", { class: "panel", "aria-label": "The sagas" }, h("div", { class: "chart-wrap" }, table), h("div", { class: "pager" }, more)),
  );

  let next = "";
  let shown = 0;
  let stop = null;
  const rows = new Map();

  let generation = 0;
  const load = async (append) => {
    const params = { ...filters, page_size: PAGE_SIZE, page_token: append ? next : "" };
    const mine = ++generation;
    let page;
    try {
      page = await api.sagas(params);
      // A newer load (the filters changed meanwhile) has the last word.
      if (mine !== generation) return;
    } catch (e) {
      if (mine !== generation) return;
      status.textContent = "";
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "empty error-text", "data-testid": "saga-error" }, e.message)));
      more.hidden = true;
      return;
    }
    if (!append) {
      rows.clear();
      tbody.replaceChildren();
      shown = 0;
    }
    for (const summary of page.sagas || []) {
      const tr = row(summary);
      rows.set(summary.saga_id, tr);
      tbody.append(tr);
      shown += 1;
    }
    next = page.next_page_token || "";
    more.hidden = !next;
    if (shown === 0) {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "empty", "data-testid": "saga-empty" }, "No saga matches these filters.")));
    }
    status.textContent = `${shown}${next ? "+" : ""} saga${shown === 1 ? "" : "s"}${Object.values(filters).some(Boolean) ? " matching the filters" : ""}`;
    tbody.dataset.loaded = "true";
  };

  const watch = () => {
    stop?.();
    stop = api.follow(filters, {
      saga: (summary) => {
        const tr = row(summary);
        tr.classList.add("flash");
        const old = rows.get(summary.saga_id);
        if (old) old.replaceWith(tr);
        else {
          tbody.querySelector("[data-testid=saga-empty]")?.closest("tr")?.remove();
          tbody.prepend(tr);
          shown += 1;
        }
        rows.set(summary.saga_id, tr);
      },
      lagged: () => load(false),
    });
  };

  const apply = async () => {
    const data = new FormData(form);
    filters = Object.fromEntries(FILTERS.map((f) => [f, String(data.get(f) || "").trim()]));
    const q = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", q.toString() ? `/sagas?${q}` : "/sagas");
    delete tbody.dataset.loaded;
    await load(false);
    watch();
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  form.addEventListener("reset", () => setTimeout(apply, 0));
  for (const sel of form.querySelectorAll("select")) sel.addEventListener("change", apply);
  more.addEventListener("click", () => load(true));
  await load(false);
  watch();
}

function row(summary) {
  const st = sagaStatus(summary.status);
  const type = lifeEventType(summary.type);
  const steps = (summary.current_steps || []).map((step) =>
    h("div", {}, h("span", { class: "mono" }, step.step_id), " ", badge(stepStatus(step.status))));
  return h("tr", { "data-testid": "saga-row", dataset: { saga: summary.saga_id, status: st, type } },
    h("td", {}, h("a", { href: `/sagas/${summary.saga_id}`, class: "mono", "data-testid": "saga-link", title: summary.saga_id }, shortId(summary.saga_id))),
    h("td", {}, typeLabel(type)),
    h("td", {}, badge(st, "saga-status")),
    h("td", {}, steps.length ? steps : h("span", { class: "muted" }, "—")),
    h("td", {}, summary.municipality_nis_code || ""),
    h("td", { class: "mono" }, summary.person_insz || ""),
    h("td", {}, h("time", { datetime: summary.started_at || "" }, time(summary.started_at))),
    h("td", { title: time(summary.updated_at) }, ago(summary.updated_at)),
  );
}
