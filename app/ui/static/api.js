// The REST API as the console calls it: the key from this tab's session storage, sent as an
// `Authorization: Bearer` header (never in a URL or a cookie); every failure an ApiError
// carrying the message the page shows.

const KEY_NAME = "anamnesis.apiKey";

/** Whatever went wrong with a request, in words for the page. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the server could not be reached
   * @param {string} code the envelope's `error`, or "network"
   * @param {string} message what the page shows
   * @param {string|null} requestId the envelope's `request_id`, to quote to an operator
   */
  constructor(status, code, message, requestId = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }

  /** Whether signing in again is the way out (a missing, wrong or revoked key). */
  get signedOut() {
    return this.status === 401;
  }
}

export const key = {
  /** @returns {string|null} */
  get: () => sessionStorage.getItem(KEY_NAME),
  /** @param {string} value */
  set: (value) => sessionStorage.setItem(KEY_NAME, value),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

/**
 * Calls the API; resolves to the parsed JSON body of a 2xx answer.
 * @param {string} method
 * @param {string} path e.g. "/v1/memories"
 * @param {{query?: Record<string, any>, body?: any}} [options] `query` entries that are
 *   null, undefined, "" or false are left out
 * @returns {Promise<any>}
 */
export async function call(method, path, { query, body } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== null && value !== undefined && value !== "" && value !== false) {
      url.searchParams.set(name, String(value));
    }
  }
  const headers = { Accept: "application/json" };
  const apiKey = key.get();
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network",
      "Cannot reach the Anamnesis server. Check that it is running and reachable, then try again.");
  }
  if (response.ok) return response.json();
  throw await failure(response);
}

/** The ApiError of a non-2xx answer, from the server's error envelope when it sent one. */
async function failure(response) {
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    // A proxy's HTML error page or an empty body: the status line is all there is.
  }
  const requestId = envelope?.request_id ?? response.headers.get("X-Request-ID");
  const code = typeof envelope?.error === "string" ? envelope.error : `http_${response.status}`;
  const detail = typeof envelope?.detail === "string" ? envelope.detail : response.statusText;
  let message;
  if (response.status === 401) {
    message = `Your API key was not accepted (${detail}). Sign in with a valid key.`;
  } else if (response.status >= 500) {
    message = `The server could not answer (${response.status} ${code}): ${detail}`;
  } else {
    message = detail || `The request failed (${response.status} ${code}).`;
  }
  if (requestId) message += ` — request id ${requestId}`;
  return new ApiError(response.status, code, message, requestId);
}

export const get = (path, query) => call("GET", path, { query });
export const post = (path, body) => call("POST", path, { body });
export const patch = (path, body) => call("PATCH", path, { body });
export const del = (path, query) => call("DELETE", path, { query });
