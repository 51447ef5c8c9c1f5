"""What no log line may hold: the token of a recovery link, which is in the link's path.

Used by gunicorn's access log (gunicorn.conf.py). No Flask.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# Werkzeug merges repeated slashes (`/auth//reset/X` is redirected to the view): so does this.
_LINK_TOKEN = re.compile(r"(/+auth/+(?:reset|secure)/+)[^/?#\s\"]+")


def redact_link_tokens(text: str) -> str:
    """`/auth/reset/<token>` and `/auth/secure/<token>` with the token replaced. Text with
    percent-escapes is read decoded first: `/auth/%72eset/...` reaches the same page."""
    if "%" in text:
        text = unquote(text)
    return _LINK_TOKEN.sub(r"\1[redacted]", text)
