"""What a security event means, in one plain sentence a person can act on.

The stored `detail` of an event ("token 0 presented after rotation to 1") is for
operators and logs; pages show this sentence instead, chosen by the event's kind alone.
"""

from __future__ import annotations

from ..security_events import EventKind

EVENT_EXPLANATIONS: dict[EventKind, str] = {
    EventKind.PASSWORD_CHANGED: "Every other device had to sign in again with the new password.",
    EventKind.REFRESH_TOKEN_REUSED: (
        "A copy of a device's sign-in was used somewhere else, so that device was signed out. "
        "If this was not you, change your password."
    ),
    EventKind.SIGN_IN_RATE_LIMITED: "Someone kept entering the wrong password, so sign-in was paused for a while.",
    EventKind.SESSION_LIMIT_REACHED: "Too many devices were signed in, so the one unused the longest was signed out.",
    EventKind.ACCOUNT_DISABLED: "An administrator turned this account off and signed out every device.",
    EventKind.ACCOUNT_ENABLED: "An administrator turned this account back on.",
    EventKind.ALL_SESSIONS_REVOKED: "An administrator signed out every device.",
    EventKind.COPIED_SIGN_IN_REFUSED: (
        "Someone used copied cookies of a device whose sign-in is bound to it. They were refused; "
        "the device itself stays signed in."
    ),
}


def event_explanation(kind: str) -> str | None:
    """The sentence for a stored event kind, or None when its label says it all (or a
    newer release wrote a kind this code does not know)."""
    try:
        return EVENT_EXPLANATIONS.get(EventKind(kind))
    except ValueError:
        return None
