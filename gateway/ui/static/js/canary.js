// A canary's page (the built-in canary workflow): its phase and step, the weights, the last judgement with its
// numbers against the thresholds, why it waits or was rolled back; promote and abort, each confirmed first.
import {ApiError, get, request} from "./api.js";
import {badge, confirmAction, h, pathOf, percent, replace} from "./dom.js";
import {keepCurrent} from "./live.js";

const FINAL = ["promoted", "rolled_back"];

export function renderCanary(main, name) {
  const content = h("div", {id: "canary"});
  const error = h("p", {class: "error", role: "alert"});
  const done = h("p", {class: "ok", role: "status"});
  const promote = h("button", {type: "button", id: "promote"}, "Promote");
  const abort = h("button", {type: "button", id: "abort", class: "danger"}, "Abort");
  main.append(h("p", {}, h("a", {href: "#/"}, "← Overview")),
    h("h1", {}, "Canary ", h("span", {class: "mono"}, name)), error,
    h("div", {class: "row"}, promote, abort), done, content);

  async function act(action, question) {
    if (!(await confirmAction(question))) return;
    error.textContent = "";
    done.textContent = "";
    try {
      await request("PUT", `/api/v1/workflows/${pathOf(name)}/status`, {action});
      done.textContent = `${action} asked for: the canary applies it within moments.`;
    } catch (failure) {
      if (failure.status !== 401) error.textContent = `${action} refused (${failure.status}): ${failure.message}`;
    }
    refresh();
  }
  promote.addEventListener("click", () => act("promote", `Promote ${name}: the canary route gets 100% now?`));
  abort.addEventListener("click", () => act("abort", `Abort ${name}: roll back to the baseline (100%) now?`));

  async function refresh() {
    try {
      const workflow = await get(`/api/v1/workflows/${pathOf(name)}`);
      const state = workflow.state || {};
      const final = FINAL.includes(state.phase);
      promote.disabled = final;
      abort.disabled = final;
      replace(content, summary(workflow, state), judgementSection(state.judgement, workflow.parameters || {}));
    } catch (failure) {
      if (failure instanceof ApiError && failure.status !== 401) error.textContent = failure.message;
    }
  }
  return keepCurrent(refresh, {tags: [`workflows:${name}`], seconds: 3});
}

function figures(pairs) {
  return h("dl", {class: "figures"}, pairs.map(([term, value, key]) =>
    h("div", {"data-figure": key || term}, h("dt", {}, term), h("dd", {}, value))));
}

function summary(workflow, state) {
  const parameters = workflow.parameters || {};
  const steps = state.steps || parameters.steps || [];
  return h("section", {class: "card", "aria-labelledby": "canary-state"},
    h("h2", {id: "canary-state"}, "State"),
    figures([
      ["phase", h("span", {id: "phase"}, badge(state.phase || workflow.status)), "phase"],
      ["step", state.step ? `${state.step} of ${steps.length} (${steps.join(" → ")})` : "–", "step"],
      ["workflow status", badge(workflow.status), "status"],
      ["failed judgements", String(state.failures ?? 0), "failures"],
      ["gateway", h("a", {href: `#/gateways/${encodeURIComponent(parameters.gateway || "")}`, class: "mono"},
        parameters.gateway || "?"), "gateway"],
    ]),
    h("p", {id: "reason"}, h("strong", {}, "Why: "), state.reason || workflow.reason || "–"),
    h("h3", {}, "Weights"),
    h("ul", {id: "weights"}, Object.entries(state.weights || {}).map(([route, weight]) =>
      h("li", {}, h("span", {class: "mono"}, route), `: ${weight}`,
        route === parameters.canary ? " (canary)" : route === parameters.baseline ? " (baseline)" : ""))));
}

function judgementSection(judgement, parameters) {
  const thresholds = [
    ["min requests", String(parameters.min_requests ?? 100)],
    ["success rate at least", String(parameters.success_rate ?? "99%")],
    ["p99 at most", String(parameters.max_p99 ?? "none")],
    ["failures survived", String(parameters.failure_limit ?? 1)],
    ["interval", String(parameters.interval ?? "?")],
    ["without data", `${parameters.no_data ?? "wait"} (after ${parameters.no_data_timeout ?? "10m"})`],
  ];
  return h("section", {class: "card", "aria-labelledby": "judgement-title"},
    h("h2", {id: "judgement-title"}, "Last judgement"),
    judgement ? [
      figures([
        ["verdict", badge(judgement.verdict), "verdict"],
        ["at", judgement.at],
        ["window", `${judgement.window} s`],
        ["requests", String(judgement.requests), "requests"],
        ["5xx errors", String(judgement.errors), "errors"],
        ["success rate", percent(judgement.success_rate), "success_rate"],
        ["p99", judgement.p99_ms === null ? "–" : `${judgement.p99_ms.toFixed(1)} ms`, "p99"],
      ]),
      judgement.reasons && judgement.reasons.length
        ? h("ul", {id: "judgement-reasons"}, judgement.reasons.map((reason) => h("li", {}, reason))) : null,
    ] : h("p", {class: "muted"}, "None yet: the first comes at the end of the first interval."),
    h("h3", {}, "Thresholds"), figures(thresholds));
}
