// Talking to the lawm API: the bearer key (session storage only, never the URL) and readable errors.

const KEY_NAME = "lawm.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

/** An error answered by the API ({"error": {code, message, hint, request_id, fields}}) or the network. */
export class ApiError extends Error {
  constructor(status, code, message, hint = null, requestId = null, fields = null) {
    super(message);
    Object.assign(this, { status, code, hint, requestId, fields });
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page, say): fall back to the status line below
  }
  const e = body && body.error;
  if (e && e.message) return new ApiError(response.status, e.code, e.message, e.hint, e.request_id, e.fields);
  return new ApiError(response.status, `http_${response.status}`, `${response.status} ${response.statusText}`.trim());
}

/** fetch() with the key; resolves to the Response when it is 2xx, throws an ApiError otherwise. */
export async function call(path, { method = "GET", body, headers = {}, accept = "application/json", signal } = {}) {
  const h = new Headers(headers);
  const key = apiKey();
  if (key) h.set("Authorization", `Bearer ${key}`);
  if (accept) h.set("Accept", accept);
  let response;
  try {
    response = await fetch(path, { method, body, headers: h, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", `the server did not answer (${err.message})`, "is lawm serve still running?");
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path, options) {
  return (await call(path, options)).json();
}

export async function postJson(path, payload, options = {}) {
  return (await call(path, {
    ...options, method: "POST", body: JSON.stringify(payload), headers: { "Content-Type": "application/json" },
  })).json();
}

export async function getBlob(path, accept = "*/*") {
  return (await call(path, { accept })).blob();
}

/** Show an error in `box` (an element with the class "error"); null hides it. */
export function showError(box, err) {
  box.replaceChildren();
  if (!err) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const message = document.createElement("div");
  message.className = "message";
  message.textContent = err.message || String(err);
  box.append(message);
  let hint = err.hint;
  if (err.status === 401) hint = "Type a valid key in the API key field at the top right, then try again.";
  if (hint) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = hint;
    box.append(p);
  }
  if (Array.isArray(err.fields) && err.fields.length) {
    const ul = document.createElement("ul");
    for (const f of err.fields) {
      const li = document.createElement("li");
      li.textContent = `${f.field}: ${f.message}`;
      ul.append(li);
    }
    box.append(ul);
  }
  if (err instanceof ApiError) {
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = [err.status ? `HTTP ${err.status}` : null, err.code, err.requestId && `request ${err.requestId}`]
      .filter(Boolean).join(" · ");
    box.append(meta);
  }
}

/** `fn()` with its errors shown in `box` (cleared first); returns fn's value or undefined on error. */
export async function guarded(box, fn) {
  showError(box, null);
  try {
    return await fn();
  } catch (err) {
    if (err.name === "AbortError") return undefined;
    if (!(err instanceof ApiError)) console.error(err); // a bug in the console, not an API answer: say so loudly
    showError(box, err);
    return undefined;
  }
}

export function fmtSeconds(s) {
  if (s == null || !Number.isFinite(s)) return "–";
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(2)} s`;
}

export function fmt(x, digits = 3) {
  if (x == null) return "–";
  if (typeof x !== "number") return String(x);
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x)) return String(x);
  return Math.abs(x) >= 1000 || Math.abs(x) < 1e-3 && x !== 0 ? x.toExponential(2) : x.toFixed(digits);
}
