// fetch() for scripts in pages, with the same "stay signed in" behaviour as page loads.
//
// The server renews an expired access token silently on every request, so a 401 here
// means the cookies alone could not sign this request in. Then, once:
//   1. POST /auth/refresh (CSRF header from <meta name="csrf-token">);
//   2. if that answered 204, send the original request again, once;
//   3. otherwise show why the session is over (the server's words when its 401 gives a
//      reason, such as "This device was signed out from another of your devices.";
//      "Your session has expired." when not) with a link to sign in again that comes
//      back to this page (and names the reason, which the sign-in page repeats), and
//      reject with SessionExpiredError.
// 401s that arrive together share one refresh call, so a page that fires ten requests
// does not rotate the refresh token ten times.
//
// Tokens stay invisible: both live in HttpOnly cookies the browser sends by itself.
// Nothing here reads or writes a token, or document.cookie.
//
// Usage:
//   import { sessionFetch, SessionExpiredError } from "/static/js/session-fetch.js";
//   const response = await sessionFetch("/api/me");

const REFRESH_URL = "/auth/refresh";
const SIGN_IN_URL = "/auth/login";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);

export const SESSION_EXPIRED_MESSAGE = "Your session has expired.";

export class SessionExpiredError extends Error {
  constructor() {
    super(SESSION_EXPIRED_MESSAGE);
    this.name = "SessionExpiredError";
  }
}

// The refresh call under way, shared by every 401 that arrives while it runs.
let refreshInFlight = null;
// The latest refresh call (under way or settled) and how many have started: a request
// answered 401 after a refresh began since it was sent takes that refresh's outcome
// instead of starting another (its 401 may simply have arrived late).
let latestRefresh = Promise.resolve(false);
let refreshesStarted = 0;

/** The CSRF token the server rendered into this page. */
export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function isSameOrigin(url) {
  return new URL(url, window.location.href).origin === window.location.origin;
}

function prepare(input, init) {
  const request = new Request(input, init);
  if (!isSameOrigin(request.url)) {
    return request; // never send our CSRF token, or our cookies, anywhere else
  }
  const headers = new Headers(request.headers);
  if (!headers.has("Accept")) {
    headers.set("Accept", "application/json");
  }
  if (!SAFE_METHODS.has(request.method) && !headers.has("X-CSRFToken")) {
    headers.set("X-CSRFToken", csrfToken());
  }
  return new Request(request, { headers, credentials: "same-origin" });
}

/**
 * Ask the server to rotate the refresh cookie. Resolves true on success, false when the
 * session is over. Concurrent callers get the same promise: one request on the wire.
 */
export function refreshSession() {
  if (refreshInFlight === null) {
    refreshInFlight = fetch(REFRESH_URL, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    })
      .then(
        (response) => response.ok,
        () => false,
      )
      .finally(() => {
        refreshInFlight = null;
      });
    latestRefresh = refreshInFlight;
    refreshesStarted += 1;
  }
  return refreshInFlight;
}

/**
 * Where "sign in again" goes: the sign-in page, then back to this page; with `why`, the
 * reason's name, which the sign-in page puts into words again.
 */
export function signInUrl(location = window.location, why = null) {
  const next = `${SIGN_IN_URL}?next=${encodeURIComponent(location.pathname + location.search)}`;
  return why ? `${next}&why=${encodeURIComponent(why)}` : next;
}

/**
 * Why this session ended, from a 401 that signed the browser out
 * (`{"error": "session_expired", "message": ..., "reason": ...}`): the server's sentence
 * and the reason's name, or null.
 */
async function reasonGiven(response) {
  try {
    const body = await response.clone().json();
    if (body.error !== "session_expired" || typeof body.message !== "string") {
      return null;
    }
    return { message: body.message, reason: typeof body.reason === "string" ? body.reason : null };
  } catch {
    return null;
  }
}

/**
 * Show the "session expired" notice (once) at the top of <main>, saying `message` (why
 * the session ended; `why` is its name, for the sign-in page), and tell the page with a
 * `session:expired` event on document.
 */
export function showSessionExpired(message = SESSION_EXPIRED_MESSAGE, why = null) {
  let notice = document.querySelector("[data-session-expired]");
  if (notice !== null) {
    return notice;
  }
  notice = document.createElement("div");
  notice.className = "flash flash-warning session-expired";
  notice.setAttribute("role", "alert");
  notice.dataset.sessionExpired = "";
  const link = document.createElement("a");
  link.href = signInUrl(window.location, why);
  link.textContent = "Sign in again";
  link.dataset.testid = "sign-in-again";
  notice.append(`${message} `, link, " to pick up where you left off.");
  (document.querySelector("main") || document.body).prepend(notice);
  document.dispatchEvent(new CustomEvent("session:expired"));
  return notice;
}

/**
 * fetch() with cookies, the CSRF header on unsafe methods, and one refresh-and-retry on
 * 401. Resolves with the response (any status but 401); rejects with
 * SessionExpiredError, after showing the notice, when the session cannot be renewed.
 * The request is sent at most twice; its body is buffered by Request.clone().
 */
export async function sessionFetch(input, init) {
  const request = prepare(input, init);
  const sameOrigin = isSameOrigin(request.url);
  const refreshesBefore = refreshesStarted;
  const response = await fetch(sameOrigin ? request.clone() : request);
  if (response.status !== 401 || !sameOrigin) {
    return response;
  }
  const reason = await reasonGiven(response);
  const refreshed = await (refreshesStarted !== refreshesBefore ? latestRefresh : refreshSession());
  if (refreshed) {
    const retried = await fetch(request);
    if (retried.status !== 401) {
      return retried;
    }
  }
  showSessionExpired(reason ? reason.message : SESSION_EXPIRED_MESSAGE, reason && reason.reason);
  throw new SessionExpiredError();
}
