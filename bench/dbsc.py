"""5: a device-bound (DBSC) refresh against a plain rotation, side by side.

A plain rotation is `POST /auth/refresh` with a fresh refresh cookie (what a page's
script sends; 204). A DBSC refresh is what Chrome sends for a bound session: `POST
/auth/dbsc/refresh` without a proof (403 and a challenge), then again with a JWT over
that challenge signed by the device's key (the rotation, 200 and the session's JSON).
Both rotate one session once per request; the DBSC one also checks an ES256 signature
and a challenge's MAC. The bench makes the challenges itself, with the server's secret
(they are stateless), and signs one JWT per request beforehand, so the load generator
does no cryptography. The server is reached over plain HTTP and told the request came
over HTTPS by `X-Forwarded-Proto` (TRUSTED_PROXIES=1), as behind a proxy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select, update

from webapp import tokens
from webapp.device_binding import ChallengeKeys, ChallengePurpose, make_challenge, refresh_state
from webapp.models import Session

from . import log
from .measurements import Measured, RatioSummary, check, measured_wrk
from .population import MAX_RPS, SessionPool, connect
from .server import AppUnderTest, FlaskSessionCookie, Server
from .settings import Settings
from .wrk import request_line

OVER_HTTPS = {"X-Forwarded-Proto": "https"}


@dataclass(frozen=True)
class DbscResult:
    # Per round: the time of one whole DBSC refresh (challenge + signed answer) over the
    # time of one plain rotation, from requests per second; and the same in worker CPU.
    refresh_over_rotation: RatioSummary
    cpu_refresh_over_rotation: RatioSummary
    plain_rps: tuple[float, ...]
    challenge_rps: tuple[float, ...]
    signed_rps: tuple[float, ...]


@dataclass(frozen=True)
class DeviceKey:
    private: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_jwk(self) -> str:
        members = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return json.dumps({name: members[name] for name in ("crv", "kty", "x", "y")}, sort_keys=True)

    def answer(self, challenge: str) -> str:
        return jwt.encode({"jti": challenge}, self.private, algorithm="ES256", headers={"typ": "dbsc+jwt"})


def bind_pool(pool: SessionPool, key: DeviceKey) -> None:
    """Bind every session of `pool` to `key`, as a registration would."""
    with connect(pool.app.database) as connection:
        connection.execute(
            update(Session)
            .where(Session.user_id == pool.user_id)
            .values(device_key=key.public_jwk, device_bound_at=datetime.now(timezone.utc))
        )
        connection.commit()


def plain_rotation_lines(pool: SessionPool, cookie: FlaskSessionCookie, *, seconds: float) -> list[str]:
    """One line per request: the next fresh refresh token of a session, for /auth/refresh."""
    counters = pool.counters()
    passes = int(MAX_RPS * seconds / len(pool.public_ids)) + 2
    name = pool.app.cookie_name("refresh_token")
    keys = pool.app.policy.keys
    return [
        request_line(
            f"{cookie.pair}; {name}={tokens.mint_refresh_token(public_id, counters[public_id] + step, keys=keys)}"
        )
        for step in range(passes)
        for public_id in pool.public_ids
    ]


def signed_refresh_lines(pool: SessionPool, key: DeviceKey, challenge_keys: ChallengeKeys) -> list[str]:
    """One line per session: its fresh refresh token and a JWT over a challenge for the
    state it is in now (its counter and when it last rotated). A challenge names the
    rotation it may make, which the bench cannot know ahead: so one pass, over a pool
    large enough for a run."""
    with connect(pool.app.database) as connection:
        rows = connection.execute(
            select(Session.public_id, Session.counter, Session.rotated_at).where(Session.user_id == pool.user_id)
        ).all()
    name = pool.app.cookie_name("refresh_token")
    now = datetime.now(timezone.utc)
    lines = []
    for public_id, counter, rotated_at in rows:
        rotated_at = rotated_at if rotated_at.tzinfo else rotated_at.replace(tzinfo=timezone.utc)
        state = refresh_state(counter, rotated_at)
        challenge = make_challenge(ChallengePurpose.REFRESH, public_id, state=state, keys=challenge_keys, now=now)
        refresh = tokens.mint_refresh_token(public_id, counter, keys=pool.app.policy.keys)
        headers = {
            **OVER_HTTPS,
            "Sec-Secure-Session-Id": public_id,
            "Secure-Session-Response": key.answer(challenge),
        }
        lines.append(request_line(f"{name}={refresh}", headers=headers))
    return lines


def measure_dbsc(
    server: Server,
    app: AppUnderTest,
    cookie: FlaskSessionCookie,
    *,
    plain: SessionPool,
    bound: SessionPool,
    settings: Settings,
    workdir: Path,
) -> DbscResult:
    key = DeviceKey.generate()
    bind_pool(bound, key)
    challenge_keys = ChallengeKeys.from_secrets(app.secret)
    csrf = {"X-CSRFToken": cookie.csrf_token}

    # Each side is what it claims, before it is timed.
    line = plain_rotation_lines(plain, cookie, seconds=0)[0]
    reply = server.request("POST", "/auth/refresh", headers={"Cookie": line, **csrf})
    check(reply.status == 204 and len(reply.cookies()) == 2, f"plain rotation gave {reply.status}")
    session_id = bound.public_ids[0]
    ask = {**OVER_HTTPS, "Sec-Secure-Session-Id": session_id}
    reply = server.request("POST", "/auth/dbsc/refresh", headers=ask)
    check(reply.status == 403 and b"" == reply.body, f"DBSC challenge gave {reply.status}")
    signed = signed_refresh_lines(bound, key, challenge_keys)[0]
    cookie_part, _, own = signed.split("\t")
    headers = dict(pair.split(": ", 1) for pair in own.split("|"))
    reply = server.request("POST", "/auth/dbsc/refresh", headers={"Cookie": cookie_part, **headers})
    check(reply.status == 200 and len(reply.cookies()) == 2, f"DBSC signed refresh gave {reply.status}")

    def run_plain() -> Measured:
        lines = plain_rotation_lines(plain, cookie, seconds=settings.seconds)
        run = measured_wrk(
            server,
            "/auth/refresh",
            lines,
            settings=settings,
            workdir=workdir,
            connections=settings.connections,
            seconds=settings.seconds,
            method="POST",
            headers=csrf,
        )
        check(run.wrk.errors == 0, "plain rotation: wrk saw errors")
        return run

    def run_challenge() -> Measured:
        # Every answer is a 403 (wrk counts them as status errors): that is the point.
        lines = [
            request_line("", headers={**OVER_HTTPS, "Sec-Secure-Session-Id": public_id})
            for public_id in bound.public_ids
        ]
        return measured_wrk(
            server,
            "/auth/dbsc/refresh",
            lines,
            settings=settings,
            workdir=workdir,
            connections=settings.connections,
            seconds=settings.seconds,
            method="POST",
            cycle=True,
        )

    def run_signed() -> Measured:
        before = sum(bound.counters().values())
        lines = signed_refresh_lines(bound, key, challenge_keys)
        run = measured_wrk(
            server,
            "/auth/dbsc/refresh",
            lines,
            settings=settings,
            workdir=workdir,
            connections=settings.connections,
            seconds=settings.seconds,
            method="POST",
        )
        rotated = sum(bound.counters().values()) - before
        check(run.wrk.errors == 0, "DBSC signed refresh: wrk saw errors")
        check(
            abs(rotated - run.wrk.requests) <= settings.connections,
            f"{run.wrk.requests} DBSC refreshes, {rotated} rotations",
        )
        return run

    plains, challenges, signeds = [], [], []
    for round_number in range(settings.rounds):
        order = [run_plain, run_challenge, run_signed]
        for side in order if round_number % 2 == 0 else reversed(order):
            result = side()
            (plains if side is run_plain else challenges if side is run_challenge else signeds).append(result)
        log(
            f"  round {round_number + 1}: plain rotation {plains[-1].wrk.rps:.0f} rps, DBSC challenge "
            f"{challenges[-1].wrk.rps:.0f} rps, DBSC signed refresh {signeds[-1].wrk.rps:.0f} rps"
        )

    def whole(challenge: Measured, signed_run: Measured) -> float:
        return 1 / challenge.wrk.rps + 1 / signed_run.wrk.rps

    return DbscResult(
        refresh_over_rotation=RatioSummary.of(
            [whole(c, s) * p.wrk.rps for p, c, s in zip(plains, challenges, signeds, strict=True)]
        ),
        cpu_refresh_over_rotation=RatioSummary.of(
            [(c.cpu_ms + s.cpu_ms) / p.cpu_ms for p, c, s in zip(plains, challenges, signeds, strict=True)]
        ),
        plain_rps=tuple(run.wrk.rps for run in plains),
        challenge_rps=tuple(run.wrk.rps for run in challenges),
        signed_rps=tuple(run.wrk.rps for run in signeds),
    )
