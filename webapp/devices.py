"""The device a request comes from, and how it and a moment read to a person. No Flask.

`Device` is who is asking, as the web edge saw it; the engine stores it on sessions and
security events. `device_words` turns a User-Agent into "Firefox 132 on Windows" with
ua-parser's bundled rules (hand-written regexes rot as browsers change), and
`device_kind` says which icon to show for it; `relative_time` turns a timestamp into
"3 minutes ago", `time_until` a future one into "in 30 days", and `exact_time` gives
the precise UTC moment shown beside them (pages rewrite it to local time by script).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import ua_parser


@dataclass(frozen=True)
class Device:
    """Who is asking, as the edge saw it: the User-Agent, the client's address, and the
    name a non-browser client gave itself (None for browsers)."""

    user_agent: str = ""
    ip_address: str = ""
    client_name: str | None = None


UNKNOWN_DEVICE = "Unknown device"

# ua-parser names mobile builds separately; people know them by the browser's name.
_BROWSER_NAMES = {
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Android WebView",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "Opera Mobile": "Opera",
    "Samsung Internet": "Samsung Internet",
}
# Safari's version follows the operating system's, so it adds nothing a person needs.
_UNVERSIONED_BROWSERS = {"Safari", "Android WebView"}
_PLATFORM_NAMES = {"Mac OS X": "macOS", "Mac OS": "macOS", "Chrome OS": "ChromeOS"}
# On Apple's handhelds the device says more than "iOS" does.
_APPLE_HANDHELDS = {"iPhone", "iPad", "iPod"}


def device_words(user_agent: str | None, *, client_name: str | None = None) -> str:
    """The device as a person reads it: "Firefox 132 on Windows", "Safari on iPhone",
    "API client: NAME" for a non-browser client, or "Unknown device" when the
    User-Agent says nothing useful (empty, curl, scripts, garbage)."""
    if client_name:
        return f"API client: {client_name}"
    if not user_agent or not user_agent.strip():
        return UNKNOWN_DEVICE
    result = ua_parser.parse(user_agent.strip())
    platform = _platform(result)
    if platform is None:
        # Command-line tools and libraries name no operating system: nothing a person
        # would recognise as one of their devices.
        return UNKNOWN_DEVICE
    browser = _browser(result)
    if browser is None:
        return f"Unknown browser on {platform}"
    return f"{browser} on {platform}"


# What a device is, for its icon: a person tells a phone from a laptop at a glance.
DEVICE_KINDS = ("computer", "phone", "tablet", "api", "unknown")


def device_kind(user_agent: str | None, *, client_name: str | None = None) -> str:
    """One of `DEVICE_KINDS` for a User-Agent: "api" for a non-browser client, "unknown"
    when `device_words` would say "Unknown device"."""
    if client_name:
        return "api"
    if not user_agent or not user_agent.strip():
        return "unknown"
    result = ua_parser.parse(user_agent.strip())
    if _platform(result) is None:
        return "unknown"
    family = result.device.family if result.device is not None else ""
    brand = (result.device.brand or "") if result.device is not None else ""
    if family in ("iPad",) or "Tablet" in brand:
        return "tablet"
    if family in ("iPhone", "iPod"):
        return "phone"
    if result.os is not None and result.os.family in ("Android", "iOS"):
        # Android phones say "Mobile"; Android tablets do not.
        return "phone" if "Mobile" in user_agent else "tablet"
    return "computer"


def _platform(result: ua_parser.Result) -> str | None:
    if result.device is not None and result.device.family in _APPLE_HANDHELDS:
        return result.device.family
    if result.os is None or result.os.family in ("", "Other"):
        return None
    return _PLATFORM_NAMES.get(result.os.family, result.os.family)


def _browser(result: ua_parser.Result) -> str | None:
    agent = result.user_agent
    if agent is None or agent.family in ("", "Other"):
        return None
    name = _BROWSER_NAMES.get(agent.family, agent.family)
    if agent.major and name not in _UNVERSIONED_BROWSERS:
        return f"{name} {agent.major}"
    return name


def relative_time(moment: datetime, *, now: datetime) -> str:
    """`moment` in words relative to `now`: "just now", "3 minutes ago", "2 hours ago",
    "yesterday", "5 days ago". A moment slightly in the future (clock skew between
    workers) reads as "just now". Raises `ValueError` for a naive datetime."""
    if moment.tzinfo is None or now.tzinfo is None:
        raise ValueError("naive datetime: pass aware UTC datetimes")
    elapsed = now - moment
    if elapsed < timedelta(minutes=1):
        return "just now"
    minutes = int(elapsed.total_seconds() // 60)
    if minutes < 60:
        return _ago(minutes, "minute")
    hours = minutes // 60
    if hours < 24:
        return _ago(hours, "hour")
    days = hours // 24
    if days == 1:
        return "yesterday"
    if days < 60:
        return _ago(days, "day")
    return f"on {moment.astimezone(timezone.utc):%d %b %Y}"


def _ago(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'} ago"


def time_until(moment: datetime, *, now: datetime) -> str:
    """A future `moment` in words relative to `now`, rounded to the nearest unit:
    "in 5 minutes", "in 3 hours", "tomorrow", "in 30 days"; "now" once it has come.
    Raises `ValueError` for a naive datetime."""
    if moment.tzinfo is None or now.tzinfo is None:
        raise ValueError("naive datetime: pass aware UTC datetimes")
    seconds = (moment - now).total_seconds()
    if seconds <= 0:
        return "now"
    if seconds < 45:
        return "in less than a minute"
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return _in(minutes, "minute")
    hours = round(seconds / 3600)
    if hours < 24:
        return _in(hours, "hour")
    days = round(seconds / 86400)
    if days == 1:
        return "tomorrow"
    return _in(days, "day")


def _in(count: int, unit: str) -> str:
    return f"in {count} {unit}{'' if count == 1 else 's'}"


def exact_time(moment: datetime) -> str:
    """The precise moment in UTC, shown beside the words: "2026-01-15 12:00:00 UTC"."""
    return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
