"""Security events as a person reads them on the sessions page."""

from __future__ import annotations

from ..security_events import ALERTS, EventKind

EVENT_LABELS: dict[EventKind, str] = {
    EventKind.SIGNED_IN: "Signed in",
    EventKind.SIGNED_OUT: "Signed out",
    EventKind.SESSION_REVOKED: "Device signed out",
    EventKind.OTHER_SESSIONS_REVOKED: "All other devices signed out",
    EventKind.PASSWORD_CHANGED: "Password changed",
    EventKind.REFRESH_TOKEN_REUSED: "Sign-in token reused: session revoked",
    EventKind.SIGN_IN_RATE_LIMITED: "Too many sign-in attempts",
    EventKind.SESSION_LIMIT_REACHED: "Signed out: too many devices",
    EventKind.ACCOUNT_DISABLED: "Account disabled",
    EventKind.ACCOUNT_ENABLED: "Account enabled",
    EventKind.ALL_SESSIONS_REVOKED: "Signed out everywhere by an administrator",
    EventKind.PASSWORD_RESET: "Password reset from an email link",
    EventKind.SIGNED_OUT_EVERYWHERE: "Every device signed out from a new sign-in email",
    EventKind.COPIED_SIGN_IN_REFUSED: "A copy of a device-bound sign-in was refused",
}

ALARMING = ALERTS


def event_label(kind: str) -> str:
    """The label for a stored event kind; a kind this code does not know (a newer
    release wrote it) still reads as words."""
    try:
        return EVENT_LABELS[EventKind(kind)]
    except (ValueError, KeyError):
        return kind.replace("_", " ").capitalize()


def is_alarming(kind: str) -> bool:
    return kind in {str(alarming) for alarming in ALARMING}
