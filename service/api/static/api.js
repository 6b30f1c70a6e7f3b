// Calls to the taggram API from the page: the API key, uploads, and problem+json errors as readable messages.
//
// The key lives in this module and in sessionStorage (this tab only, gone when it closes) and travels only in the
// Authorization header: never in a URL, where it would end up in logs and history.

const KEY_STORAGE = "taggram-api-key";
const AUDIO_ENDPOINT_PARAMS = ["model", "taxonomy", "head", "k", "hop"];

let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";

export function setApiKey(key) {
  apiKey = key.trim();
  if (apiKey) sessionStorage.setItem(KEY_STORAGE, apiKey);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export function hasApiKey() {
  return apiKey !== "";
}

// An answer that is not 2xx. `title` and `detail` come from the problem+json body when there is one.
export class ApiError extends Error {
  constructor(status, title, detail, code) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.code = code;
  }

  get needsKey() {
    return this.status === 401;
  }
}

async function errorFrom(response) {
  let body = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      body = await response.json();
    } catch {
      body = null;  // a proxy's HTML or a cut body: fall back to the status line
    }
  }
  const title = (body && body.title) || response.statusText || `HTTP ${response.status}`;
  return new ApiError(response.status, title, body && body.detail, body && body.code);
}

async function call(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (!headers.has("Accept")) headers.set("Accept", "application/json, application/problem+json");
  if (apiKey) headers.set("Authorization", `Bearer ${apiKey}`);
  let response;
  try {
    response = await fetch(path, { ...init, headers, credentials: "omit", cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "The service cannot be reached", String(error.message || error), "network_error");
  }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

export function getModels() {
  return call("/models");
}

// POST the file as multipart field "file" to an audio endpoint; `params` become the query (undefined ones dropped).
export function upload(path, file, params = {}) {
  const query = new URLSearchParams();
  for (const name of AUDIO_ENDPOINT_PARAMS) {
    if (params[name] !== undefined && params[name] !== null && params[name] !== "") query.set(name, params[name]);
  }
  const body = new FormData();
  body.append("file", file, file.name || "upload");
  const search = query.toString();
  return call(search ? `${path}?${search}` : path, { method: "POST", body });
}

// The catalog map in its compact form (columns; the browser undoes the gzip).
export function getCatalogMap(model) {
  const headers = { Accept: "application/vnd.taggram.map+json, application/problem+json" };
  return call(`/catalog/map?${new URLSearchParams({ model })}`, { headers });
}

export function getSimilar(trackId, model) {
  return call(`/similar/${trackId.split("/").map(encodeURIComponent).join("/")}?${new URLSearchParams({ model })}`);
}
