// A saga's page: what it is, its steps as a chart, the steps with the actions an operator may
// take (each behind a confirmation asking why), and its timeline, all kept current.

import * as api from "./api.js";
import {
  h, badge, sagaStatus, stepStatus, lifeEventType, typeLabel, time, duration,
} from "./format.js";
import { gantt } from "./gantt.js";

export async function render(main, ctx) {
  const id = decodeURIComponent(location.pathname.split("/")[2] || "");
  const root = h("div", { "data-testid": "saga-page", dataset: { saga: id } });
  main.append(root);
  let pending = null;
  let busy = false;
  const refresh = async () => {
    pending = null;
    if (busy) return;
    try {
      draw(root, await api.saga(id), ctx, act);
    } catch (e) {
      if (e.status === 404 || e.status === 400) {
        root.replaceChildren(h("h1", {}, "No such saga"), h("p", {}, e.message),
          h("p", {}, h("a", { href: "/sagas" }, "Back to the sagas")));
        return;
      }
      ctx.say(e.message);
    }
  };
  const soon = () => {
    if (!pending) pending = setTimeout(refresh, 300);
  };

  async function act(action, body, question) {
    const reason = await ctx.confirmAction(question);
    if (reason === null) return;
    busy = true;
    try {
      const view = await api.act(id, action, { ...body, reason });
      ctx.say(question.done, true);
      busy = false;
      draw(root, view, ctx, act);
    } catch (e) {
      busy = false;
      ctx.say(`${question.title}: ${e.message}`);
    }
  }

  await refresh();
  api.follow({ saga: id }, { saga: soon, lagged: soon });
}

function draw(root, view, ctx, act) {
  const { detail, chart } = view;
  const summary = detail.summary || {};
  const st = sagaStatus(summary.status);
  const type = lifeEventType(summary.type);
  const mayAct = ctx.me.may_act;
  const forward = st === "running" || st === "parked";
  const cancellable = forward || st === "completed";

  const head = h("div", { class: "page-head" },
    h("div", {},
      h("p", { class: "muted" }, h("a", { href: "/sagas" }, "Sagas"), " / ", typeLabel(type)),
      h("h1", {}, `${typeLabel(type)} `, h("span", { class: "mono muted", "data-testid": "saga-id" }, summary.saga_id || ""), " ",
        badge(st, "saga-status"))),
    mayAct && cancellable
      ? h("div", { class: "actions" }, h("button", {
          class: "button danger", type: "button", "data-testid": "cancel-saga",
          onclick: () => act("cancel", {}, {
            title: "Cancel this saga",
            text: st === "completed"
              ? "The saga has completed: cancelling it undoes what its steps did."
              : "The saga stops: what its steps did so far is undone.",
            action: "Cancel the saga",
            done: "The saga is cancelled.",
          }),
        }, "Cancel saga"))
      : "");

  const facts = h("section", { class: "panel", "aria-label": "The saga" },
    h("dl", { class: "facts" },
      h("dt", {}, "Life event"), h("dd", { class: "mono" }, summary.life_event_id || "", summary.life_event_source ? ` (${summary.life_event_source})` : ""),
      h("dt", {}, "Municipality"), h("dd", {}, summary.municipality_nis_code || "—"),
      h("dt", {}, "Person"), h("dd", { class: "mono" }, summary.person_insz || "—"),
      h("dt", {}, "Started"), h("dd", {}, time(summary.started_at)),
      h("dt", {}, summary.finished_at ? "Finished" : "Updated"),
      h("dd", {}, time(summary.finished_at || summary.updated_at),
        summary.finished_at && summary.started_at
          ? ` (took ${duration(new Date(summary.finished_at) - new Date(summary.started_at))})` : ""),
      summary.last_error ? [h("dt", {}, "Last error"), h("dd", { class: "error-text", "data-testid": "last-error" }, summary.last_error)] : ""));

  const chartPanel = h("section", { class: "panel", "aria-labelledby": "chart-h" },
    h("h2", { id: "chart-h" }, "Steps over time"), gantt(chart));

  const openKind = (stepId) => {
    const row = (chart.rows || []).find((r) => r.step_id === stepId);
    const last = row?.bars?.[row.bars.length - 1];
    return last && !last.end ? last.kind : null;
  };
  const steps = h("section", { class: "panel", "aria-labelledby": "steps-h" },
    h("h2", { id: "steps-h" }, "Steps"),
    h("table", { "data-testid": "steps" },
      h("thead", {}, h("tr", {},
        ["Step", "Handler", "Status"].map((c) => h("th", { scope: "col" }, c)),
        h("th", { scope: "col", class: "num" }, "Attempts"),
        h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
      h("tbody", {}, (detail.steps || []).map((step) => {
        const ss = stepStatus(step.status);
        const kind = openKind(step.step_id);
        const retryable = mayAct && (
          (forward && (ss === "failed" || ss === "running" || (ss === "waiting" && kind === "retry-wait")))
          || ss === "compensating");
        const skippable = mayAct && (
          (forward && ["pending", "running", "waiting", "failed"].includes(ss)) || ss === "compensating");
        return h("tr", { "data-testid": "step-row", dataset: { step: step.step_id, status: ss } },
          h("td", { class: "mono" }, step.step_id),
          h("td", { class: "mono" }, step.handler || ""),
          h("td", {}, badge(ss, "step-status"), kind === "retry-wait" ? h("span", { class: "muted" }, " retry due") : ""),
          h("td", { class: "num" }, step.attempts || 0),
          h("td", {}, h("div", { class: "actions" },
            retryable ? h("button", {
              class: "button small", type: "button", "data-testid": `retry-${step.step_id}`,
              "aria-label": `Retry ${step.step_id}`,
              onclick: () => act("retry", { step: step.step_id }, {
                title: `Retry ${step.step_id}`,
                text: `A new attempt of ${step.step_id} (${step.handler || "its handler"}) is scheduled now.`,
                action: "Retry the step",
                done: `${step.step_id}: a new attempt is scheduled.`,
              }),
            }, "Retry") : "",
            skippable ? h("button", {
              class: "button small danger", type: "button", "data-testid": `skip-${step.step_id}`,
              "aria-label": `Skip ${step.step_id}`,
              onclick: () => act("skip", { step: step.step_id }, {
                title: `Skip ${step.step_id}`,
                text: `The saga goes on as if ${step.step_id} had succeeded; nothing is undone for it later.`,
                action: "Skip the step",
                done: `${step.step_id} is skipped.`,
              }),
            }, "Skip") : "")));
      }))));

  const timeline = h("section", { class: "panel", "aria-labelledby": "timeline-h" },
    h("h2", { id: "timeline-h" }, "Timeline"),
    h("ol", { class: "timeline", "data-testid": "timeline" },
      (detail.timeline || []).map((entry) => {
        const e = entry.event || {};
        const [what, why, operator] = describe(e);
        return h("li", { class: operator ? "operator" : "", "data-testid": operator ? "timeline-operator" : "timeline-entry" },
          h("time", { datetime: entry.at || e.occurred_at || "" }, time(entry.at || e.occurred_at)),
          h("div", {}, h("span", { class: "what" }, what), why ? h("div", { class: "why" }, why) : ""));
      })));

  root.replaceChildren(head, facts, chartPanel, steps, timeline);
  root.dataset.status = st;
  root.dataset.events = String((detail.timeline || []).length);
}

const ACTIONS = {
  "retry-step": "retried",
  "skip-step": "skipped",
  cancel: "cancelled the saga",
  "complete-human": "completed by hand",
  "reject-human": "rejected",
  resume: "resumed the saga",
};

/** A timeline event in words: what happened, why, and whether an operator did it. */
function describe(e) {
  const k = Object.keys(e).find((key) => !["saga_id", "occurred_at", "causation_id", "correlation_id"].includes(key));
  const v = e[k] || {};
  const attempt = v.attempt ? ` (attempt ${v.attempt})` : "";
  switch (k) {
    case "saga_started": return [`Saga started: ${v.definition || v.life_event_type || ""} v${v.definition_version || 1}`, (v.planned_steps || []).join(", ")];
    case "step_scheduled": return [`${v.step_id}: sent to ${v.handler}${attempt}`];
    case "step_succeeded": return [`${v.step_id}: succeeded${attempt}`];
    case "step_failed": return [`${v.step_id}: failed${attempt}${v.retryable ? ", will be retried" : ""}`, [v.error_code, v.reason].filter(Boolean).join(": ")];
    case "step_retry_scheduled": return [`${v.step_id}: attempt ${v.next_attempt} due ${time(v.due_at)}`];
    case "step_timed_out": return [`${v.step_id}: timed out${attempt}`];
    case "step_skipped": return [`${v.step_id}: skipped${v.actor ? ` by ${v.actor}` : ""}`, v.reason];
    case "step_compensation_scheduled": return [`${v.step_id}: undoing with ${v.handler}${attempt}`];
    case "step_compensated": return [`${v.step_id}: undone`];
    case "compensation_failed": return [`${v.step_id}: undoing failed${attempt}`, v.reason];
    case "wait_started": return [`${v.step_id}: waiting until ${time(v.until)}`];
    case "wait_elapsed": return [`${v.step_id}: wait over`];
    case "human_task_completed": return [`${v.step_id}: completed by ${v.actor || "a person"}`, v.note];
    case "saga_parked": return ["Saga parked", v.reason];
    case "saga_resumed": return [`Saga resumed${v.actor ? ` by ${v.actor}` : ""}`, v.reason];
    case "saga_cancelled": return [`Saga cancelled${v.actor ? ` by ${v.actor}` : ""}`, v.reason];
    case "saga_completed": return ["Saga completed"];
    case "saga_compensated": return ["Saga compensated", v.failed_step_id ? `after ${v.failed_step_id} failed` : ""];
    case "saga_failed": return ["Saga failed", v.reason];
    case "incident_raised": return [`Incident${v.step_id ? ` on ${v.step_id}` : ""}`, v.reason];
    case "operator_acted":
      return [`${v.actor || "An operator"} ${ACTIONS[v.action] || v.action}${v.step_id ? ` ${v.step_id}` : ""}`,
        v.reason ? `Reason: ${v.reason}` : "", true];
    default: return [k || "event"];
  }
}
