// A gateway's page: its routes' weights as sliders and number fields, the split they make checked by the API
// (?validate_only=true) and shown before it is applied; each route's condition and strength, with the API's error
// at its position; the targets with drain / undrain; sticky mode and TTL; charts per route over 15 minutes.
// Every change is a merge patch of the gateway, checked first and then made; nothing is changed on the page's
// side of it.
import {ApiError, get, mode, request} from "./api.js";
import {badge, debounce, h, number, parsePercent, pathOf, replace} from "./dom.js";
import {lineChart} from "./chart.js";
import {keepCurrent} from "./live.js";

const SPAN = 15 * 60;               // seconds the charts show
const COLORS = ["#1f5fbf", "#e07b00", "#1b7f3b", "#8e44ad", "#b3261e", "#00838f", "#6d4c41", "#546e7a"];

/** A JSON pointer's part (RFC 6901). */
const pointerPart = (text) => text.replace(/~/g, "~0").replace(/\//g, "~1");

export function renderGateway(main, name) {
  const path = `/api/v1/gateways/${pathOf(name)}`;
  const header = h("div", {class: "row", id: "gateway-header"});
  const error = h("p", {class: "error", role: "alert"});
  const weights = h("section", {class: "card", "aria-labelledby": "weights-title"});
  const routes = h("div", {id: "routes"});
  const sticky = h("section", {class: "card", "aria-labelledby": "sticky-title"});
  main.append(h("p", {}, h("a", {href: "#/"}, "← Overview")),
    h("h1", {}, "Gateway ", h("span", {class: "mono"}, name)), header, error, weights, sticky, routes);

  let shown = null;                 // the route names the page is built for
  let gateway = null;               // the document last read
  const parts = {};                 // per route: its controls
  const dirty = {weights: false, sticky: false, conditions: new Set()};

  /** Check a merge patch (validate_only), then make it; the API's error in `where` (and thrown again). */
  async function write(patch, where) {
    where.error.textContent = "";
    where.ok.textContent = "";
    try {
      await request("PATCH", path, patch, {validateOnly: true});
      const document = await request("PATCH", path, patch);
      where.ok.textContent = "Applied.";
      return document;
    } catch (failure) {
      if (failure.status !== 401) {
        const kind = failure.status === 409 ? "Conflict (409): "
          : failure.status ? `Refused (${failure.status}): ` : "";
        where.error.textContent = `${kind}${failure.message}`;
      }
      throw failure;
    }
  }

  // -- weights ------------------------------------------------------------------------------------------------
  const split = h("div", {class: "split", id: "split", "aria-hidden": "true"});
  const splitList = h("ul", {class: "split-list", id: "split-list"});
  const weightsStatus = {error: h("p", {class: "error", role: "alert", id: "weights-error"}),
                         ok: h("p", {class: "ok", role: "status", id: "weights-ok"})};
  const applyWeights = h("button", {type: "button", id: "apply-weights", disabled: true}, "Apply weights");
  const resetWeights = h("button", {type: "button", class: "secondary", id: "reset-weights"}, "Reset");
  const weightRows = h("div", {id: "weight-rows"});
  let previewNumber = 0;

  function wantedWeights() {
    const wanted = {};
    for (const [route, part] of Object.entries(parts)) {
      wanted[route] = {weight: `${Number(part.number.value).toFixed(2)}%`};
    }
    return {routes: wanted};
  }

  const preview = debounce(async () => {
    const mine = ++previewNumber;
    applyWeights.disabled = true;
    weightsStatus.error.textContent = "";
    weightsStatus.ok.textContent = "Checking…";
    try {
      const answer = await request("PATCH", path, wantedWeights(), {validateOnly: true});
      if (mine !== previewNumber) return;
      showSplit(answer, "The split once applied:");
      weightsStatus.ok.textContent = "Checked by the API: apply it to make it so.";
      applyWeights.disabled = false;
    } catch (failure) {
      if (mine !== previewNumber) return;
      weightsStatus.ok.textContent = "";
      if (failure.status !== 401) weightsStatus.error.textContent = `Not valid: ${failure.message}`;
    }
  }, 200);

  function setWeight(route, value, fromSlider) {
    const clamped = Math.min(100, Math.max(0, Math.round(value * 100) / 100));
    const part = parts[route];
    if (fromSlider) part.number.value = clamped.toFixed(2);
    else part.slider.value = String(clamped);
    const names = Object.keys(parts);
    if (names.length === 2) {           // two routes: the other one takes the rest
      const other = parts[names.find((candidate) => candidate !== route)];
      const rest = Math.round((100 - clamped) * 100) / 100;
      other.number.value = rest.toFixed(2);
      other.slider.value = String(rest);
    }
    dirty.weights = true;
    preview();
  }

  function showSplit(document, caption) {
    const shares = effectiveWeights(document);
    replace(split, Object.entries(shares).map(([route, share], index) =>
      h("span", {style: {width: `${share}%`, background: COLORS[index % COLORS.length]},
                 title: `${route} ${share.toFixed(2)}%`})));
    replace(splitList, h("li", {class: "muted"}, caption), Object.entries(shares).map(([route, share]) =>
      h("li", {"data-route": route}, h("span", {class: "mono"}, route), `: ${share.toFixed(2)}%`)));
  }

  applyWeights.addEventListener("click", async () => {
    applyWeights.disabled = true;
    try {
      const document = await write(wantedWeights(), weightsStatus);
      dirty.weights = false;
      showSplit(document, "The split now:");
      refresh();
    } catch (failure) { /* shown */ }
  });
  resetWeights.addEventListener("click", () => {
    dirty.weights = false;
    weightsStatus.error.textContent = "";
    weightsStatus.ok.textContent = "";
    applyWeights.disabled = true;
    if (gateway) update(gateway);
  });
  weights.append(h("h2", {id: "weights-title"}, "Weights"), weightRows,
    h("h3", {}, "Resulting split"), split, splitList, weightsStatus.error, weightsStatus.ok,
    h("div", {class: "row"}, applyWeights, resetWeights));

  // -- sticky -------------------------------------------------------------------------------------------------
  const stickyMode = h("select", {id: "sticky-mode", onchange: () => { dirty.sticky = true; }},
    ["none", "route", "instance"].map((value) => h("option", {value}, value)));
  const stickyTtl = h("input", {id: "sticky-ttl", type: "text", size: 8, oninput: () => { dirty.sticky = true; }});
  const stickyStatus = {error: h("p", {class: "error", role: "alert", id: "sticky-error"}),
                        ok: h("p", {class: "ok", role: "status"})};
  const applySticky = h("button", {type: "button", id: "apply-sticky"}, "Apply sticky settings");
  applySticky.addEventListener("click", async () => {
    try {
      await write({sticky: stickyMode.value, sticky_ttl: stickyTtl.value.trim()}, stickyStatus);
      dirty.sticky = false;
      refresh();
    } catch (failure) { /* shown */ }
  });
  sticky.append(h("h2", {id: "sticky-title"}, "Sticky sessions"),
    h("div", {class: "row"},
      h("div", {class: "field"}, h("label", {for: "sticky-mode"}, "Sticky mode"), stickyMode),
      h("div", {class: "field"}, h("label", {for: "sticky-ttl"}, "Sticky TTL"), stickyTtl), applySticky),
    stickyStatus.error, stickyStatus.ok);

  // -- one route ----------------------------------------------------------------------------------------------
  function buildRoute(route, index) {
    const id = `r${index}`;
    const slider = h("input", {type: "range", min: 0, max: 100, step: 0.01, id: `weight-range-${id}`,
                               "aria-label": `Weight of route ${route}, slider`, "data-route": route});
    const numberField = h("input", {type: "number", min: 0, max: 100, step: 0.01, id: `weight-${id}`,
                                    class: "weight-number", "data-route": route, inputmode: "decimal"});
    slider.addEventListener("input", () => setWeight(route, Number(slider.value), true));
    numberField.addEventListener("input", () => {
      if (numberField.value !== "" && Number.isFinite(Number(numberField.value))) {
        setWeight(route, Number(numberField.value), false);
      }
    });
    weightRows.append(h("div", {class: "weight", "data-route": route},
      h("label", {for: `weight-${id}`, class: "route-name mono"}, route), slider,
      h("span", {}, numberField, " %")));

    const condition = h("input", {type: "text", id: `condition-${id}`, "aria-describedby": `condition-error-${id}`,
                                  spellcheck: "false", autocomplete: "off", "data-route": route});
    const strength = h("input", {type: "number", id: `strength-${id}`, min: 0, max: 100, step: 0.01,
                                 "data-route": route});
    const conditionError = h("div", {id: `condition-error-${id}`, class: "condition-error", role: "alert"});
    const conditionOk = h("p", {class: "ok", role: "status"});
    const applyCondition = h("button", {type: "button", id: `apply-condition-${id}`}, "Apply condition");
    const markDirty = () => dirty.conditions.add(route);
    condition.addEventListener("input", markDirty);
    strength.addEventListener("input", markDirty);
    applyCondition.addEventListener("click", async () => {
      const text = condition.value.trim();
      const body = text ? {condition: text, condition_strength: `${Number(strength.value || 100).toFixed(2)}%`}
                        : {condition: null};
      replace(conditionError);
      condition.removeAttribute("aria-invalid");
      strength.removeAttribute("aria-invalid");
      const where = {error: h("p"), ok: conditionOk};
      try {
        await write({routes: {[route]: body}}, where);
        dirty.conditions.delete(route);
        refresh();
      } catch (failure) {
        if (failure instanceof ApiError && failure.status !== 401) {
          showConditionError(failure, route, text, condition, strength, conditionError);
        }
      }
    });

    const targets = h("tbody", {});
    const charts = mode === "platform"
      ? [lineChart("requests/s", (v) => number(v, 2), SPAN), lineChart("error rate", (v) => v === null ? "–"
          : `${(v * 100).toFixed(1)}%`, SPAN), lineChart("p50", (v) => v === null ? "–" : `${v.toFixed(1)} ms`, SPAN),
         lineChart("p99", (v) => v === null ? "–" : `${v.toFixed(1)} ms`, SPAN)]
      : [lineChart("requests/s (since this page opened)", (v) => number(v, 2), SPAN)];
    const card = h("section", {class: "card route", "data-route": route, "aria-labelledby": `route-title-${id}`},
      h("h2", {id: `route-title-${id}`}, "Route ", h("span", {class: "mono"}, route)),
      h("div", {class: "row condition"},
        h("div", {class: "field"}, h("label", {for: `condition-${id}`}, "Condition"), condition),
        h("div", {class: "field"}, h("label", {for: `strength-${id}`}, "Condition strength (%)"), strength),
        applyCondition),
      conditionError, conditionOk,
      h("h3", {}, "Targets"),
      h("div", {class: "scroll"}, h("table", {class: "targets"},
        h("thead", {}, h("tr", {}, ["Target", "State", "In flight", "Requests", ""].map((title) =>
          h("th", {scope: "col"}, title)))), targets)),
      h("h3", {}, "Last 15 minutes"),
      h("div", {class: "charts"}, charts.map((chart) => chart.figure)));
    routes.append(card);
    parts[route] = {id, slider, number: numberField, condition, strength, targets, charts, samples: [],
                    targetStatus: {error: h("p", {class: "error", role: "alert"}), ok: h("p", {class: "ok"})}};
    card.querySelector("table").after(parts[route].targetStatus.error, parts[route].targetStatus.ok);
  }

  function targetRows(route, document) {
    const configured = ((document.routes[route] || {}).targets || []).map((target) =>
      typeof target === "string" ? {address: target} : target);
    const status = (((document.status || {}).routes || {})[route] || {}).targets || {};
    const addresses = [...new Set([...configured.map((target) => target.address), ...Object.keys(status)])];
    return addresses.map((address) => {
      const seen = status[address] || {};
      const target = configured.find((candidate) => candidate.address === address);
      const draining = target ? Boolean(target.drain) : true;
      const button = target ? h("button", {type: "button", class: "secondary", "data-key": `${route} ${address}`,
        "aria-label": `${draining ? "Undrain" : "Drain"} target ${address} of route ${route}`,
        onclick: () => drain(route, address, !draining)}, draining ? "Undrain" : "Drain") : null;
      return h("tr", {"data-target": address},
        h("th", {scope: "row", class: "mono"}, address), h("td", {}, badge(seen.state || "pending")),
        h("td", {}, seen.in_flight ?? "–"), h("td", {}, seen.requests ?? "–"), h("td", {}, button));
    });
  }

  async function drain(route, address, draining) {
    const targets = ((gateway.routes[route] || {}).targets || []).map((target) => {
      const whole = typeof target === "string" ? {address: target} : {...target};
      if (whole.address === address) whole.drain = draining;
      return whole;
    });
    try {
      await write({routes: {[route]: {targets}}}, parts[route].targetStatus);
      refresh();
    } catch (failure) { /* shown */ }
  }

  // -- reading the gateway --------------------------------------------------------------------------------------
  function update(document) {
    gateway = document;
    const names = Object.keys(document.routes || {});
    if (shown === null || shown.join("\n") !== names.join("\n")) {
      shown = names;
      for (const route of Object.keys(parts)) delete parts[route];
      weightRows.replaceChildren();
      routes.replaceChildren();
      dirty.weights = false;
      dirty.conditions.clear();
      names.forEach(buildRoute);
    }
    const status = document.status || {};
    replace(header, h("span", {}, "port ", h("span", {class: "mono"}, `${document.bind || ""}:${document.port}`)),
      badge(status.state), document.generated ? h("span", {class: "muted"}, "generated by a deployment") : null);
    const shares = effectiveWeights(document);
    for (const route of names) {
      const part = parts[route];
      const body = document.routes[route];
      if (!dirty.weights) {
        part.number.value = (shares[route] ?? 0).toFixed(2);
        part.slider.value = String(shares[route] ?? 0);
      }
      if (!dirty.conditions.has(route)) {
        part.condition.value = body.condition || "";
        part.strength.value = (parsePercent(body.condition_strength) ?? 100).toFixed(2);
      }
      replace(part.targets, targetRows(route, document));
      if (mode === "gateway") countRequests(part, route, status);
    }
    if (!dirty.weights) showSplit(document, "The split now:");
    if (!dirty.sticky) {
      stickyMode.value = document.sticky || "none";
      stickyTtl.value = document.sticky_ttl || "";
    }
  }

  /** Gateway mode has no metrics API: requests per second from the targets' counters, as polled. */
  function countRequests(part, route, status) {
    const targets = ((status.routes || {})[route] || {}).targets || {};
    const total = Object.values(targets).reduce((sum, target) => sum + (target.requests || 0), 0);
    const now = Date.now() / 1000;
    part.samples.push({t: now, total});
    part.samples = part.samples.filter((sample) => now - sample.t <= SPAN);
    const points = [];
    for (let index = 1; index < part.samples.length; index++) {
      const before = part.samples[index - 1];
      const after = part.samples[index];
      const rate = Math.max(0, after.total - before.total) / Math.max(0.001, after.t - before.t);
      points.push({x: after.t - now, y: rate});
    }
    part.charts[0].update(points);
  }

  async function refresh() {
    try {
      update(await get(path));
      error.textContent = "";
    } catch (failure) {
      if (failure instanceof ApiError && failure.status !== 401) error.textContent = failure.message;
    }
  }

  async function refreshCharts() {
    if (mode !== "platform" || !shown) return;
    for (const route of shown) {
      const part = parts[route];
      if (!part) continue;
      try {
        const history = await get(
          `/api/v1/metrics/gateways/${pathOf(name)}/routes/${pathOf(route)}/history?window=15m`);
        const at = (point) => (point.from + point.to) / 2;
        part.charts[0].update(history.points.map((point) => ({x: at(point), y: point.rate})));
        part.charts[1].update(history.points.map((point) => ({x: at(point), y: point.error_rate})));
        part.charts[2].update(history.points.map((point) => ({x: at(point), y: point.p50})));
        part.charts[3].update(history.points.map((point) => ({x: at(point), y: point.p99})));
      } catch (failure) {
        if (failure.status === 503) return;       // the platform's metrics are off
      }
    }
  }

  const stopLive = keepCurrent(async () => {
    const first = shown === null;
    await refresh();
    if (first) refreshCharts();
  }, {tags: [`gateways:${name}`], seconds: 2});
  const chartTimer = setInterval(refreshCharts, 3000);
  return () => {
    stopLive();
    clearInterval(chartTimer);
  };
}

/** Each route's share in per cents: the weights given, and the rest shared evenly by routes without one. */
function effectiveWeights(document) {
  const routes = document.routes || {};
  const shares = {};
  const unweighted = [];
  let given = 0;
  for (const [route, body] of Object.entries(routes)) {
    const weight = parsePercent(body.weight);
    if (weight === null) unweighted.push(route);
    else {
      shares[route] = weight;
      given += weight;
    }
  }
  for (const route of unweighted) shares[route] = Math.max(0, 100 - given) / unweighted.length;
  const ordered = {};
  for (const route of Object.keys(routes)) ordered[route] = shares[route];
  return ordered;
}

/** The API's error about a route's condition, under the field at fault, with a caret at the position it names. */
function showConditionError(failure, route, text, condition, strength, where) {
  const prefix = `/routes/${pointerPart(route)}/`;
  const field = failure.field || "";
  const atStrength = field === `${prefix}condition_strength`;
  const input = atStrength ? strength : condition;
  input.setAttribute("aria-invalid", "true");
  const found = /at position (\d+)/.exec(failure.message);
  const position = found ? Number(found[1]) : null;
  replace(where,
    h("p", {class: "error"},
      `${atStrength ? "Strength" : "Condition"} refused (${failure.status}), nothing changed: ${failure.message}`),
    position !== null && !atStrength
      ? h("pre", {class: "caret", "aria-label": `the error is at position ${position}`, "data-position": position},
          `${text}\n${" ".repeat(position)}^`)
      : null);
  input.focus();
  if (position !== null && !atStrength) input.setSelectionRange(position, Math.min(text.length, position + 1));
}
