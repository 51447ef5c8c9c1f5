// The account page's panels (this device's session, recent security activity) are
// rendered by the server; this script only refreshes them from /api/session and
// /api/security-events through sessionFetch, so a request that meets an expired session
// refreshes it, or says the session is over. It refreshes on load, on the "Refresh"
// button and when the tab comes back into view; nothing ticks or polls on a timer.

import { formatExact } from "./local-times.js";
import { SessionExpiredError, sessionFetch } from "./session-fetch.js";

const panel = document.querySelector("[data-session-panel]");
const activity = document.querySelector("[data-activity]");
const refreshButton = document.querySelector("[data-action=refresh]");
const status = document.querySelector("[data-status]");
const EVENTS_SHOWN = 5;

const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const UNITS = [
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
];

let expired = false;

// Words for a moment, counted against the server's clock, as webapp/devices.py words
// them: past moments floor ("3 minutes ago"), future ones round ("in 30 days").
function describe(moment, now) {
  const seconds = (moment - now) / 1000;
  if (seconds < 0) {
    const ago = -seconds;
    if (ago < 60) {
      return "just now";
    }
    for (const [unit, size] of UNITS) {
      if (ago >= size) {
        return relative.format(-Math.floor(ago / size), unit);
      }
    }
  }
  if (seconds < 45) {
    return "in less than a minute";
  }
  const minutes = Math.max(1, Math.round(seconds / 60));
  if (minutes < 60) {
    return relative.format(minutes, "minute");
  }
  const hours = Math.round(seconds / 3600);
  if (hours < 24) {
    return relative.format(hours, "hour");
  }
  return relative.format(Math.round(seconds / 86400), "day");
}

// The same markup as the `moment` macro in templates/_ui.html.
function momentElement(iso, now) {
  const wrapper = document.createElement("span");
  wrapper.className = "moment";
  if (!iso) {
    wrapper.textContent = "unknown";
    return wrapper;
  }
  const words = document.createElement("time");
  words.dateTime = iso;
  words.textContent = describe(new Date(iso), now);
  const exact = document.createElement("time");
  exact.className = "exact";
  exact.dateTime = iso;
  exact.dataset.exact = "";
  exact.textContent = formatExact(iso);
  wrapper.append(words, " ", exact);
  return wrapper;
}

function renderSession(session) {
  const now = new Date(session.now);
  for (const element of panel.querySelectorAll("[data-field]")) {
    const field = element.dataset.field;
    if (field === "persistent") {
      element.textContent = session.persistent
        ? "Yes: this browser stays signed in after it closes"
        : "No: closing the browser signs you out";
    } else if (field === "idle_expires_at") {
      element.replaceChildren("signed out ", momentElement(session[field], now));
    } else if (field in session) {
      element.replaceChildren(momentElement(session[field], now));
    }
  }
}

function paragraph(className, ...children) {
  const p = document.createElement("p");
  p.className = className;
  p.append(...children);
  return p;
}

function badge(text, danger = false) {
  const span = document.createElement("span");
  span.className = danger ? "badge danger" : "badge";
  span.textContent = text;
  return span;
}

// The same markup as the `activity_list` macro in templates/_ui.html; the icon is
// copied from a server-rendered item of the same kind when there is one.
function renderEvents(events, now) {
  const list = activity.querySelector("[data-events]");
  const icons = new Map();
  for (const item of list.querySelectorAll("[data-event]")) {
    const key = `${item.dataset.kind}:${item.classList.contains("is-alarming")}`;
    icons.set(key, item.querySelector(".activity-icon"));
  }
  const items = events.slice(0, EVENTS_SHOWN).map((event) => {
    const item = document.createElement("li");
    item.className = event.alarming ? "activity-item is-alarming" : "activity-item";
    item.dataset.event = "";
    item.dataset.kind = event.kind;
    const icon = icons.get(`${event.kind}:${Boolean(event.alarming)}`);
    const iconSlot = icon ? icon.cloneNode(true) : document.createElement("span");
    iconSlot.className = "activity-icon";
    const label = document.createElement("strong");
    label.dataset.field = "event";
    label.textContent = event.label;
    const what = paragraph("activity-what", label);
    if (event.alarming) {
      what.append(" ", badge("Action needed", true));
    }
    if (event.this_session) {
      what.append(" ", badge("This device"));
    }
    item.append(iconSlot, what, paragraph("activity-when", momentElement(event.created_at, now)));
    if (event.explanation) {
      item.append(paragraph("activity-why", event.explanation));
    }
    const where = `${event.device || "Unknown device"} · ${event.ip_address || "IP address not recorded"}`;
    item.append(paragraph("activity-where", where));
    return item;
  });
  if (items.length === 0) {
    const empty = document.createElement("li");
    empty.className = "activity-empty muted";
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
    renderEvents(events.events, new Date(session.now));
    status.textContent = `Updated ${new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
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

refreshButton.hidden = false;
refreshButton.addEventListener("click", refresh);
// Coming back to the tab is activity: show fresh facts. No timer polls the server, so a
// forgotten tab does not keep its session alive past the idle timeout.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    refresh();
  }
});
refresh();
