// The dashboard's shell: who is signed in, which page to show, the confirmation dialog and
// the notices every page shares.

import * as api from "./api.js";
import { h } from "./format.js";
import * as overview from "./overview.js";
import * as sagas from "./sagas.js";
import * as saga from "./saga.js";
import * as lists from "./lists.js";

const main = document.getElementById("main");
const notice = document.getElementById("notice");
const live = document.querySelector("[data-testid=live-status]");

api.onLiveState((state) => {
  live.dataset.state = state;
  live.querySelector(".live-text").textContent =
    state === "live" ? "Live" : state === "down" ? "Reconnecting…" : "Connecting…";
});

/** Shows a message above the page: an error (the default) or, with `ok`, a confirmation. */
export function say(message, ok = false) {
  if (!message) {
    notice.hidden = true;
    return;
  }
  notice.textContent = message;
  notice.classList.toggle("ok", ok);
  notice.setAttribute("role", ok ? "status" : "alert");
  notice.hidden = false;
}

/**
 * Asks for confirmation and a reason in the dialog; resolves to the reason, or `null` when
 * the operator cancels.
 */
export function confirmAction({ title, text, action }) {
  const dialog = document.getElementById("confirm");
  const form = document.getElementById("confirm-form");
  const reason = document.getElementById("confirm-reason");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const submit = form.querySelector("[data-testid=confirm-submit]");
  submit.textContent = action || "Confirm";
  reason.value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const value = reason.value.trim();
        resolve(dialog.returnValue === "confirm" && value ? value : null);
      },
      { once: true },
    );
    dialog.showModal();
    reason.focus();
  });
}

function markNav(page) {
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function signIn(reason) {
  main.replaceChildren(
    h("div", { class: "panel" },
      h("h1", {}, "Sign in"),
      h("p", { class: "muted" }, reason || "This dashboard needs an operator's token."),
      h("form", {
        class: "filters",
        "data-testid": "sign-in",
        onsubmit: (e) => {
          e.preventDefault();
          api.setToken(new FormData(e.target).get("token"));
          location.reload();
        },
      },
      h("div", { class: "field" },
        h("label", { for: "token" }, "Token"),
        h("input", { id: "token", name: "token", type: "password", required: true, autocomplete: "current-password" })),
      h("button", { class: "button primary", type: "submit" }, "Sign in"))),
  );
}

async function start() {
  const path = location.pathname.replace(/\/+$/, "") || "/";
  let me;
  try {
    me = await api.me();
  } catch (e) {
    if (e.status === 401) {
      if (api.token()) api.setToken("");
      signIn(api.token() ? "That token was not accepted." : undefined);
      return;
    }
    say(`The operations service does not answer: ${e.message}`);
    return;
  }
  const who = document.querySelector("[data-testid=whoami]");
  who.replaceChildren(
    h("span", {}, me.name, " · ", me.role, me.open ? " (open service)" : ""),
    api.token()
      ? h("button", {
          class: "button small",
          type: "button",
          onclick: () => { api.setToken(""); location.reload(); },
        }, "Sign out")
      : "",
  );
  const ctx = { me, say, confirmAction };
  main.replaceChildren();
  let page;
  let render;
  if (path === "/") [page, render] = ["overview", overview.render];
  else if (path === "/sagas") [page, render] = ["sagas", sagas.render];
  else if (path.startsWith("/sagas/")) [page, render] = ["sagas", saga.render];
  else if (path === "/incidents") [page, render] = ["incidents", lists.renderIncidents];
  else if (path === "/rejected") [page, render] = ["rejected", lists.renderRejected];
  else {
    main.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/" }, "Back to the overview")));
    return;
  }
  markNav(page);
  try {
    await render(main, ctx);
  } catch (e) {
    say(e.message);
  }
}

start();
