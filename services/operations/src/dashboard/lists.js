// The incidents raised on sagas, and the inputs the gateway rejected: paged lists.

import * as api from "./api.js";
import { h, time, shortId } from "./format.js";

function pagedList(main, { title, intro, testid, columns, load, row, empty }) {
  const tbody = h("tbody", { "data-testid": `${testid}-rows` });
  const more = h("button", { class: "button", type: "button", hidden: true }, "Load more");
  main.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, title), h("p", { class: "muted" }, intro))),
    h("section", { class: "panel" },
      h("table", { "data-testid": testid },
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))), tbody),
      h("div", { class: "pager" }, more)));
  let next = "";
  const page = async (append) => {
    const answer = await load({ page_size: 50, page_token: append ? next : "" });
    const items = answer.items || [];
    if (!append) tbody.replaceChildren();
    for (const item of items) tbody.append(row(item));
    if (!tbody.children.length) {
      tbody.append(h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty)));
    }
    next = answer.next || "";
    more.hidden = !next;
  };
  more.addEventListener("click", () => page(true));
  return page(false);
}

export function renderIncidents(main) {
  return pagedList(main, {
    title: "Incidents",
    intro: "What the sagas could not settle on their own.",
    testid: "incidents",
    columns: ["Raised", "Saga", "Step", "Reason"],
    load: async (p) => {
      const a = await api.incidents(p);
      return { items: a.incidents, next: a.next_page_token };
    },
    row: (i) => h("tr", {},
      h("td", {}, time(i.raised_at)),
      h("td", {}, h("a", { class: "mono", href: `/sagas/${i.saga_id}`, title: i.saga_id }, shortId(i.saga_id))),
      h("td", { class: "mono" }, i.step_id || "—"),
      h("td", {}, i.reason || "")),
    empty: "No incidents.",
  });
}

export function renderRejected(main) {
  return pagedList(main, {
    title: "Rejected inputs",
    intro: "Life events the gateway refused, with why.",
    testid: "rejected",
    columns: ["Received", "Origin", "Code", "Reason", "Content type"],
    load: async (p) => {
      const a = await api.rejected(p);
      return { items: a.rejected, next: a.next_page_token };
    },
    row: (r) => h("tr", {},
      h("td", {}, time(r.received_at)),
      h("td", {}, r.origin || ""),
      h("td", { class: "mono" }, r.reason_code || ""),
      h("td", {}, r.reason || ""),
      h("td", { class: "mono" }, r.content_type || "")),
    empty: "No rejected inputs.",
  });
}
