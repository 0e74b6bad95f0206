// The JSON API and its stream of changes. A bearer token, when the service has operators,
// is kept for the browser tab only (sessionStorage) and sent with every call.

const TOKEN_KEY = "levensloop.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** An error the API answered: its HTTP status, gRPC code name and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(
      response.status,
      body?.code || "unknown",
      body?.message || `${response.status} ${response.statusText}`,
    );
  }
  return body;
}

export async function get(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  return answer(await fetch(url, { headers: headers() }));
}

export async function post(path, body) {
  return answer(
    await fetch(path, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    }),
  );
}

export const me = () => get("/api/me");
export const stats = () => get("/api/stats");
export const sagas = (params) => get("/api/sagas", params);
export const saga = (id) => get(`/api/sagas/${encodeURIComponent(id)}`);
export const incidents = (params) => get("/api/incidents", params);
export const rejected = (params) => get("/api/rejected", params);

/** An operator's action: `retry` or `skip` a step, or `cancel` the saga. */
export function act(id, action, body) {
  return post(`/api/sagas/${encodeURIComponent(id)}/${action}`, body);
}

const listeners = new Set();

/** Tells `fn` whether the stream of changes is `connecting`, `live` or `down`. */
export function onLiveState(fn) {
  listeners.add(fn);
}

function liveState(state) {
  for (const fn of listeners) fn(state);
}

/**
 * Follows `/api/events` (server-sent events, read with fetch so the bearer token goes with
 * it) and calls `handlers[event](data)` for each; reconnects after a break, calling
 * `handlers.lagged` since changes may have been missed. Returns a function that stops it.
 */
export function follow(params, handlers) {
  let stopped = false;
  let controller = null;
  let delay = 1000;
  const url = new URL("/api/events", location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v) url.searchParams.set(k, v);
  }
  const dispatch = (event, data) => {
    const fn = handlers[event];
    if (!fn) return;
    let value = data;
    try {
      value = JSON.parse(data);
    } catch {
      // Not JSON (a `lagged` notice): passed on as text.
    }
    fn(value);
  };
  const run = async () => {
    let first = true;
    while (!stopped) {
      controller = new AbortController();
      liveState("connecting");
      try {
        const response = await fetch(url, {
          headers: headers({ Accept: "text/event-stream" }),
          signal: controller.signal,
        });
        if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
        if (!first) dispatch("lagged", "reconnected");
        first = false;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
            let event = "message";
            const data = [];
            for (const line of block.split(/\r?\n/)) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
            }
            if (event === "ready") {
              delay = 1000;
              liveState("live");
            }
            if (data.length) dispatch(event, data.join("\n"));
          }
        }
      } catch (e) {
        if (stopped) return;
        console.warn("the stream of changes broke", e);
      }
      if (stopped) return;
      liveState("down");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  };
  run();
  return () => {
    stopped = true;
    controller?.abort();
  };
}
