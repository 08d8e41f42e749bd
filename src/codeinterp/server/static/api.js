// The HTTP API of `codeinterp serve` (docs/http-api.md): bearer-token fetches, an SSE reader
// over fetch (EventSource cannot send an Authorization header), authenticated downloads.

const TOKEN_KEY = "codeinterp.token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

/** The token from `#token=...` (then removed from the address bar), else sessionStorage. */
export function takeToken() {
  const hash = window.location.hash.replace(/^#/, "");
  if (hash) {
    const params = new URLSearchParams(hash);
    const token = params.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      params.delete("token");
      const rest = params.toString();
      const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : "");
      window.history.replaceState(null, "", url);
    }
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function authHeaders(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  return { Authorization: `Bearer ${token}`, ...extra };
}

/** Called with every ApiError of status 401, so the page can ask for the token again. */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

async function errorFrom(response) {
  let detail = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") {
      detail = body.detail;
    } else if (body && body.detail !== undefined) {
      detail = JSON.stringify(body.detail);
    }
  } catch {
    // not JSON: keep the status line
  }
  const error = new ApiError(response.status, detail);
  if (response.status === 401) onUnauthorized(error);
  return error;
}

/** fetch() with the token; `json` is sent as a JSON body. Resolves to the raw Response. */
export async function request(path, { method = "GET", json, body, signal, headers } = {}) {
  const init = { method, headers: authHeaders(headers), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** A JSON call: resolves to the parsed reply, or null for an empty one (204). */
export async function api(path, options = {}) {
  const response = await request(path, options);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/**
 * POST and read the reply as Server-Sent Events, calling `onEvent(type, data)` for each
 * event as it arrives. Resolves when the stream ends.
 */
export async function streamEvents(path, json, onEvent, { signal } = {}) {
  const response = await request(path, {
    method: "POST",
    json,
    signal,
    headers: { Accept: "text/event-stream" },
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let match;
    // Events end with a blank line; the spec allows \r\n, \n or \r line ends.
    while ((match = /\r\n\r\n|\n\n|\r\r/.exec(buffer)) !== null) {
      const block = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      dispatch(block, onEvent);
    }
  }
  if (buffer.trim()) dispatch(buffer, onEvent);
}

function dispatch(block, onEvent) {
  let type = "message";
  const data = [];
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (!line || line.startsWith(":")) continue; // comments keep the connection alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length && type === "message") return;
  const text = data.join("\n");
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { detail: text };
    }
  }
  onEvent(type, parsed ?? {});
}

/** Fetch `path` with the token and hand it to the browser as a download named `filename`. */
export async function download(path, filename) {
  const response = await request(path);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // The browser reads the blob asynchronously; free it once the download surely started.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The URL path of a workspace file: every segment percent-encoded, slashes kept. */
export function filePath(sessionId, path) {
  const encoded = path.split("/").map(encodeURIComponent).join("/");
  return `/api/sessions/${encodeURIComponent(sessionId)}/files/${encoded}`;
}
