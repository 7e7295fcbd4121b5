// The API of the server that serves the page: requests with the bearer token (when one was entered), errors as
// ApiError, and the event stream read over fetch (EventSource cannot send a token).

const TOKEN_KEY = "vamp.token";
const listeners = {unauthorized: new Set(), reachable: new Set()};

export class ApiError extends Error {
  /** status 0: the API could not be reached. */
  constructor(status, message, field = null) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

export const mode = document.body.dataset.mode === "gateway" ? "gateway" : "platform";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** on("unauthorized", fn): a request was answered 401; on("reachable", fn(boolean)): the API answered or not. */
export function on(what, listener) {
  listeners[what].add(listener);
}

function tell(what, value) {
  for (const listener of listeners[what]) listener(value);
}

function headers(extra = {}) {
  const all = {Accept: "application/json", ...extra};
  const current = token();
  if (current) all.Authorization = `Bearer ${current}`;
  return all;
}

/** One request; the decoded answer, or ApiError with the API's message and field. */
export async function request(method, path, body = undefined, {validateOnly = false} = {}) {
  const url = validateOnly ? `${path}${path.includes("?") ? "&" : "?"}validate_only=true` : path;
  const options = {method, headers: headers(body === undefined ? {} : {"Content-Type": "application/json"}),
                   cache: "no-store"};
  if (body !== undefined) options.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    tell("reachable", false);
    throw new ApiError(0, `the API cannot be reached (${error.message})`);
  }
  tell("reachable", true);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (error) {
    data = {error: text.slice(0, 200)};
  }
  if (response.status === 401) tell("unauthorized", data && data.error);
  if (!response.ok) {
    const message = data && data.error ? data.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message, data ? data.field : null);
  }
  return data;
}

export const get = (path) => request("GET", path);

/** Whether the token (or none) is accepted: a read that needs it. */
export async function checkAccess() {
  await get(mode === "gateway" ? "/api/v1/status" : "/api/v1/info");
}

/**
 * Follow the events matching `tags` (a list; every one must be carried) as they come: onEvent(event) for each,
 * onState("live" | "reconnecting" | "unauthorized"). Reconnects with Last-Event-ID, so nothing kept is missed or
 * seen twice. `after`: the id of the last event already shown. Returns a function that stops it.
 */
export function follow(tags, onEvent, onState, after = null) {
  let stopped = false;
  let lastId = after;
  let controller = null;
  const query = new URLSearchParams([["heartbeat", "5"], ...tags.map((tag) => ["tag", tag])]);

  async function readOnce() {
    controller = new AbortController();
    const extra = {Accept: "text/event-stream"};
    if (lastId !== null) extra["Last-Event-ID"] = String(lastId);
    const response = await fetch(`/api/v1/events/stream?${query}`,
                                 {headers: headers(extra), signal: controller.signal, cache: "no-store"});
    tell("reachable", true);
    if (response.status === 401) {
      tell("unauthorized", null);
      onState("unauthorized");
      stopped = true;
      return;
    }
    if (!response.ok) throw new ApiError(response.status, `the event stream answered ${response.status}`);
    onState("live");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, {stream: true}).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const message = {id: null, data: []};
        for (const line of block.split("\n")) {
          if (line.startsWith("id:")) message.id = line.slice(3).trim();
          else if (line.startsWith("data:")) message.data.push(line.slice(5).replace(/^ /, ""));
        }
        if (message.id !== null) lastId = message.id;
        if (message.data.length) onEvent(JSON.parse(message.data.join("\n")));
      }
    }
  }

  (async () => {
    let delay = 500;
    while (!stopped) {
      try {
        await readOnce();
        delay = 500;
      } catch (error) {
        if (stopped) return;
        if (error.status === undefined) tell("reachable", false);
      }
      if (stopped) return;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
  })();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
