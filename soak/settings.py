"""What one soak does: read once from the environment in `__main__`, then passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_OFF = ("0", "false", "off", "no")
PG_RESTART_MODES = ("fast", "immediate")


class SettingsError(ValueError):
    """A SOAK_* variable is malformed; the message names it."""


def _number(environ: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number (got {raw!r})") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g} (got {raw})")
    return value


@dataclass(frozen=True)
class Settings:
    """The soak's settings (the package docstring lists the variables)."""

    seconds: int  # of load: browsers act this long, then wind down
    users: int  # virtual browsers
    spawn_rate: float  # browsers started per second
    workers: int  # gunicorn workers
    access_token_ttl: int  # ACCESS_TOKEN_TTL of the app
    think_seconds: float  # longest pause between two actions of a browser
    pg_restart_mode: str  # pg_ctl restart -m ...
    redis_outage_seconds: float
    keep: bool  # keep the temporary folder (logs, data directory) afterwards
    write: bool  # write soak/results.md

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        mode = environ.get("SOAK_PG_RESTART_MODE", "fast").strip().lower() or "fast"
        if mode not in PG_RESTART_MODES:
            raise SettingsError(f"SOAK_PG_RESTART_MODE must be fast or immediate (got {mode!r})")
        return cls(
            seconds=int(_number(environ, "SOAK_SECONDS", 180, minimum=30)),
            users=int(_number(environ, "SOAK_USERS", 40, minimum=3)),
            spawn_rate=_number(environ, "SOAK_SPAWN_RATE", 1, minimum=0.1),
            workers=int(_number(environ, "SOAK_WORKERS", 4, minimum=1)),
            access_token_ttl=int(_number(environ, "SOAK_ACCESS_TOKEN_TTL", 5, minimum=1)),
            think_seconds=_number(environ, "SOAK_THINK_SECONDS", 9, minimum=1),
            pg_restart_mode=mode,
            redis_outage_seconds=_number(environ, "SOAK_REDIS_OUTAGE_SECONDS", 10, minimum=1),
            keep=environ.get("SOAK_KEEP", "0").strip().lower() not in _OFF,
            write=environ.get("SOAK_WRITE", "1").strip().lower() not in _OFF,
        )

    @property
    def ramp_seconds(self) -> float:
        """How long Locust takes to start every browser."""
        return self.users / self.spawn_rate
