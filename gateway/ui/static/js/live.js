// Keeping a view current: refresh it when an event it cares about arrives (the event stream), and every few
// seconds as well (what has no event, such as a target's request count; the only way in gateway mode).
import {follow, mode} from "./api.js";
import {debounce} from "./dom.js";

const live = document.getElementById("live");

/** Call `refresh` now, on each event carrying `tags`, and every `seconds`; returns a function that stops it. */
export function keepCurrent(refresh, {tags = [], seconds = 5} = {}) {
  const soon = debounce(refresh, 150);
  const timer = setInterval(refresh, seconds * 1000);
  let stopStream = () => {};
  if (mode === "platform") {
    stopStream = follow(tags, soon, showStreamState);
  } else {
    live.textContent = `updated every ${seconds} s`;
  }
  refresh();
  return () => {
    clearInterval(timer);
    stopStream();
  };
}

export function showStreamState(state) {
  live.textContent = {live: "● live", reconnecting: "reconnecting to the event stream…",
                      unauthorized: "the event stream needs a token"}[state] || state;
  live.dataset.state = state;
}
