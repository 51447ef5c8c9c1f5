"""Parallel requests presenting one refresh token, against the real app served over HTTP
on a file-backed database: one rotation, one successor token for all of them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import select
from werkzeug.serving import make_server

from webapp import accounts, sessions
from webapp.extensions import db
from webapp.models import Session

from .conftest import PASSWORD, make_app

PARALLEL = 20


def test_parallel_requests_with_one_refresh_token_rotate_once(database_url):
    # The real clock: this is a real server. Every request after the winner's rotation is
    # served through the grace window, which must outlast the burst on a loaded machine.
    app = make_app(database_url, environ={"REFRESH_REUSE_GRACE": "60"})
    with app.app_context():
        user = accounts.create_user(db.session, "alice@example.com", PASSWORD, rounds=4, now=app.config["CLOCK"]())
        issued = sessions.start_session(
            db.session, user, policy=app.extensions["session_policy"], now=app.config["CLOCK"]()
        )
        db.session.remove()

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/api/me"
    barrier = threading.Barrier(PARALLEL)

    def call(_):
        # No access cookie: every request must go through rotation.
        with requests.Session() as http:
            barrier.wait()
            response = http.get(url, headers={"Cookie": f"refresh_token={issued.refresh_token}"}, timeout=30)
            return response.status_code, response.json(), response.cookies.get("refresh_token")

    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            results = list(pool.map(call, range(PARALLEL)))
    finally:
        server.shutdown()
        thread.join()

    assert [status for status, _, _ in results] == [200] * PARALLEL
    assert {body["session_id"] for _, body, _ in results} == {issued.session_id}
    successors = {cookie for _, _, cookie in results}
    assert len(successors) == 1 and None not in successors
    assert successors.pop().startswith(f"{issued.session_id}.1.")
    with app.app_context():
        row = db.session.execute(select(Session).where(Session.public_id == issued.session_id)).scalar_one()
        assert row.counter == 1
        assert row.revoked_at is None
        db.engine.dispose()
