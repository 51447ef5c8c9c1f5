// Exact times in the viewer's own time zone. The server renders them in UTC
// (`<time class="exact" datetime="..." data-exact>2026-01-15 12:00:00 UTC</time>`);
// this rewrites each to local time once, on load. Nothing ticks: the words beside them
// ("3 minutes ago") are the server's, as of the page load.

const exact = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  timeZoneName: "short",
});

/** "15 Jan 2026, 13:00 CET" (in the viewer's locale and zone) for an ISO timestamp. */
export function formatExact(iso) {
  return exact.format(new Date(iso));
}

/** Rewrite every server-rendered exact time under `root` to local time. */
export function localizeTimes(root = document) {
  for (const time of root.querySelectorAll("time[data-exact]")) {
    if (time.dateTime && !Number.isNaN(Date.parse(time.dateTime))) {
      time.textContent = formatExact(time.dateTime);
      time.dataset.local = "true";
    }
  }
}

localizeTimes();
