// The events: the newest kept ones, then each new one live, filtered by tags (each must be carried).
import {ApiError, follow, get} from "./api.js";
import {h, replace} from "./dom.js";
import {showStreamState} from "./live.js";

const SHOWN = 200;

export function renderEvents(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const tags = params.getAll("tag");
  const input = h("input", {id: "tag-filter", type: "text", value: tags.join(" "), "aria-describedby": "tag-help",
                            placeholder: "deployments:sava canary"});
  const list = h("ol", {class: "events", id: "event-list", "aria-live": "polite", reversed: true});
  const error = h("p", {class: "error", role: "alert"});
  const form = h("form", {class: "row", role: "search"},
    h("div", {class: "field"}, h("label", {for: "tag-filter"}, "Filter by tags"), input,
      h("span", {id: "tag-help", class: "muted"}, "every tag given must be carried; separate them with spaces")),
    h("button", {type: "submit"}, "Filter"));
  form.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const words = input.value.split(/[\s,]+/).filter(Boolean);
    location.hash = words.length ? `#/events?${new URLSearchParams(words.map((tag) => ["tag", tag]))}` : "#/events";
  });
  main.append(h("h1", {}, "Events"), form, error, list);

  let stop = () => {};
  let stopped = false;
  (async () => {
    let after = null;
    try {
      const query = new URLSearchParams([["per_page", "50"], ...tags.map((tag) => ["tag", tag])]);
      const recent = await get(`/api/v1/events?${query}`);
      replace(list, recent.map(eventItem));
      after = recent.length ? recent[0].id : null;
    } catch (failure) {
      if (failure instanceof ApiError && failure.status !== 401) error.textContent = failure.message;
      if (failure.status === 401) return;
    }
    if (stopped) return;
    stop = follow(tags, (event) => {
      list.prepend(eventItem(event));
      while (list.children.length > SHOWN) list.lastElementChild.remove();
    }, showStreamState, after);
  })();
  return () => {
    stopped = true;
    stop();
  };
}

function eventItem(event) {
  const value = event.value === null || event.value === undefined ? "" : JSON.stringify(event.value);
  return h("li", {"data-event": event.id},
    h("div", {class: "row"}, h("time", {datetime: event.timestamp, class: "mono"}, event.timestamp),
      h("span", {class: "muted"}, `#${event.id} ${event.type}`)),
    h("div", {}, (event.tags || []).map((tag) => h("span", {class: "tag mono"}, tag))),
    value ? h("div", {class: "mono muted"}, value.length > 300 ? `${value.slice(0, 300)}…` : value) : null);
}
