// The account page's live panels: when this session ends, and recent security activity.
// Data comes from /api/session and /api/security-events through sessionFetch, so a
// request that meets an expired session refreshes it, or says the session is over.

import { SessionExpiredError, sessionFetch } from "./session-fetch.js";

const panel = document.querySelector("[data-session-panel]");
const activity = document.querySelector("[data-activity]");
const refreshButton = document.querySelector("[data-action=refresh]");
const status = document.querySelector("[data-status]");

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const UNITS = [
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];

// Server time minus this browser's time: countdowns follow the server's clock.
let clockOffset = 0;
let expired = false;

function serverNow() {
  return Date.now() + clockOffset;
}

function describeRelative(moment) {
  const seconds = Math.round((moment - serverNow()) / 1000);
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return relative.format(Math.trunc(seconds / size), unit);
    }
  }
  return "";
}

function setTime(element, iso, { whenPast } = {}) {
  element.textContent = "";
  if (!iso) {
    element.textContent = "unknown";
    return;
  }
  const moment = new Date(iso);
  const time = document.createElement("time");
  time.dateTime = iso;
  time.title = absolute.format(moment);
  time.dataset.relative = "";
  if (whenPast) {
    time.dataset.whenPast = whenPast;
  }
  element.append(time);
  tickTime(time);
}

function tickTime(time) {
  const moment = new Date(time.dateTime);
  const past = moment <= serverNow();
  time.textContent =
    past && time.dataset.whenPast ? time.dataset.whenPast : `${describeRelative(moment)} (${absolute.format(moment)})`;
}

function tick() {
  for (const time of document.querySelectorAll("time[data-relative]")) {
    tickTime(time);
  }
}

function renderSession(session) {
  clockOffset = new Date(session.now) - Date.now();
  for (const element of panel.querySelectorAll("[data-field]")) {
    const field = element.dataset.field;
    if (field === "persistent") {
      element.textContent = session.persistent ? "Yes: this browser stays signed in after it closes" : "No: closing the browser signs you out";
    } else if (field === "access_expires_at") {
      setTime(element, session[field], { whenPast: "expired: renewed on your next click" });
    } else {
      setTime(element, session[field]);
    }
  }
}

function renderEvents(events) {
  const list = activity.querySelector("[data-events]");
  const items = events.map((event) => {
    const item = document.createElement("li");
    item.className = "event";
    item.dataset.kind = event.kind;
    if (event.alarming) {
      item.classList.add("event-alert");
    }
    const label = document.createElement("strong");
    label.className = "event-label";
    label.textContent = event.label;
    const when = document.createElement("span");
    when.className = "event-time";
    setTime(when, event.created_at);
    const where = document.createElement("span");
    where.className = "event-device muted";
    where.textContent = [event.device || "unknown device", event.ip_address].filter(Boolean).join(" · ");
    item.append(label, when, where);
    if (event.this_session) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "this session";
      label.append(badge);
    }
    return item;
  });
  if (items.length === 0) {
    const empty = document.createElement("li");
    empty.className = "muted";
    empty.textContent = "No security activity yet.";
    items.push(empty);
  }
  list.replaceChildren(...items);
}

async function getJSON(url) {
  const response = await sessionFetch(url);
  if (!response.ok) {
    throw new Error(`${url} answered ${response.status}`);
  }
  return response.json();
}

async function refresh() {
  if (expired) {
    return;
  }
  refreshButton.disabled = true;
  status.textContent = "Updating…";
  try {
    // Both at once: after an access token expiry they race to renew it, which the
    // server's grace window (and sessionFetch's shared refresh) make safe.
    const [session, events] = await Promise.all([getJSON("/api/session"), getJSON("/api/security-events")]);
    renderSession(session);
    renderEvents(events.events);
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    panel.dataset.loaded = "true";
    activity.dataset.loaded = "true";
  } catch (error) {
    status.textContent = error instanceof SessionExpiredError ? "" : "Could not update. Try again in a moment.";
  } finally {
    refreshButton.disabled = expired;
  }
}

document.addEventListener("session:expired", () => {
  expired = true;
  refreshButton.disabled = true;
  panel.dataset.expired = "true";
});

refreshButton.addEventListener("click", refresh);
// Coming back to the tab is activity: show fresh numbers. No timer polls the server,
// so a forgotten tab does not keep its session alive past the idle timeout.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    refresh();
  }
});
setInterval(tick, 1000);
refresh();
