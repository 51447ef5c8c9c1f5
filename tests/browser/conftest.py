"""End-to-end fixtures: the real app behind a real HTTP server, driven by Debian's Chromium.

The server is Werkzeug's, threaded (parallel requests of one page really race), on a
free port of 127.0.0.1, with a migrated SQLite file of its own and the wall clock:
browsers expire cookies by the wall clock, so the access token lives only
`ACCESS_TOKEN_TTL` seconds here and the tests wait for it, polling rather than sleeping.
What only the server measures (the refresh grace window) a test skips by moving the
server's clock forward (`ServerClock`) instead of sleeping through it.

On a loaded machine: `ACCESS_TOKEN_TTL` must outlast every step between a browser getting
an access cookie and a test looking at it (1.4s of the former 2 were seen to go by), and
`REFRESH_REUSE_GRACE` the spread of one page's parallel requests; it is never waited out.

Playwright cannot download browsers in this environment; it launches /usr/bin/chromium
(`apt-get install -y chromium`). Without it every test here is skipped, saying why.
"""

from __future__ import annotations

import itertools
import shutil
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from webapp.extensions import db

from ..conftest import PASSWORD, make_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_MISSING = (
    f"{CHROMIUM} is missing: install Debian's Chromium (`apt-get install -y chromium`, "
    "as .ci/run does) to run the browser tests"
)
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ACCESS_TOKEN_TTL = 6
REFRESH_REUSE_GRACE = 30
# Playwright's waits (navigation, locators): generous, for a loaded 2-core machine.
ACTION_TIMEOUT_MS = 15_000

# Every test module here: `pytestmark = browser_tests`.
browser_tests = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM.exists(), reason=CHROMIUM_MISSING)]


class ServerClock:
    """The live server's clock: the wall clock, which browsers expire cookies by, that a
    test may move forward (`advance`) or hold still for a moment (`frozen`).

    Set and read from different threads: each change is one attribute assignment."""

    def __init__(self):
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None

    def __call__(self) -> datetime:
        frozen_at = self._frozen_at
        return frozen_at if frozen_at is not None else datetime.now(timezone.utc) + self._offset

    def advance(self, seconds: float) -> None:
        """Time passes for the server alone, e.g. a grace window it would otherwise wait out."""
        self._offset += timedelta(seconds=seconds)

    @contextmanager
    def frozen(self) -> Iterator[datetime]:
        """No time passes for the server inside the block; afterwards it follows the wall
        clock again."""
        self._frozen_at = self()
        try:
            yield self._frozen_at
        finally:
            self._frozen_at = None


@dataclass
class LiveServer:
    url: str
    app: object
    clock: ServerClock

    def __call__(self, path: str = "/") -> str:
        return self.url + path


def tls_context_for_127_0_0_1() -> ssl.SSLContext:
    """A server's TLS context with a certificate for 127.0.0.1 from a throwaway CA, which
    no browser trusts: open its pages with `ignore_https_errors=True`."""
    import trustme

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    return context


@contextmanager
def serving(
    directory: Path,
    migrated_template: Path,
    environ: Callable[[str], dict[str, str]] | None = None,
    *,
    tls: bool = False,
) -> Iterator[LiveServer]:
    """The app on a free port of 127.0.0.1, on a copy of the migrated database in
    `directory`. `environ(url)` adds settings, given the server's own address (PUBLIC_URL).
    With `tls`, over HTTPS (`https://127.0.0.1:PORT`), with a certificate of a test CA."""
    path = directory / "app.sqlite3"
    shutil.copy(migrated_template, path)
    clock = ServerClock()
    ssl_context = tls_context_for_127_0_0_1() if tls else None
    # Bound before the app is made, so that its settings may name its address.
    server = make_server("127.0.0.1", 0, None, threaded=True, ssl_context=ssl_context)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    app = server.app = make_app(
        f"sqlite:///{path}",
        clock,
        environ={
            "ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL),
            "REFRESH_REUSE_GRACE": str(REFRESH_REUSE_GRACE),
            **(environ(url) if environ else {}),
        },
    )
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(url=url, app=app, clock=clock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, migrated_template) -> Iterator[LiveServer]:
    with serving(tmp_path_factory.mktemp("browser-db"), migrated_template) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(CHROMIUM_MISSING)
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


class Device:
    """One browser profile (a Playwright context): its own cookies, like a separate device."""

    def __init__(self, browser, server: LiveServer, **options):
        self.server = server
        options.setdefault("viewport", {"width": 1100, "height": 800})
        self.context = browser.new_context(base_url=server.url, **options)
        self.context.set_default_timeout(ACTION_TIMEOUT_MS)
        self.page = self.context.new_page()

    def new_page(self):
        return self.context.new_page()

    def cookies(self) -> dict[str, dict]:
        return {cookie["name"]: cookie for cookie in self.context.cookies(self.server.url)}

    def cookie_value(self, name: str) -> str | None:
        cookie = self.cookies().get(name)
        return None if cookie is None else cookie["value"]

    def register(self, email: str, password: str = PASSWORD):
        """Create an account through the form, typing like a person."""
        page = self.page
        page.goto("/")
        page.get_by_role("link", name="Create account").first.click()
        page.get_by_label("Email").press_sequentially(email)
        page.get_by_label("Password", exact=True).press_sequentially(password)
        page.get_by_label("Confirm password").press_sequentially(password)
        page.get_by_role("button", name="Create account").click()
        page.wait_for_url("**/account")

    def sign_in(self, email: str, password: str = PASSWORD, *, remember: bool = False, page=None):
        """Sign in through the form (from wherever the page is, or the sign-in page)."""
        page = page or self.page
        if "/auth/login" not in page.url:
            page.goto("/auth/login")
        page.get_by_label("Email").press_sequentially(email)
        page.get_by_label("Password").press_sequentially(password)
        if remember:
            page.get_by_label("Keep me signed in on this device").check()
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()

    def session_id(self, page=None) -> str:
        """This device's session id, as `/api/me` gives it (pages show no raw id)."""
        response = (page or self.page).request.get("/api/me")
        assert response.ok, response.status
        return response.json()["session_id"]

    def signed_in_email(self, page=None) -> str | None:
        nav = (page or self.page).locator("[data-testid=signed-in-email]")
        return nav.inner_text() if nav.count() else None

    def wait_for_access_expiry(self, timeout: float = ACCESS_TOKEN_TTL + 15) -> None:
        """Until the browser has dropped the access cookie (it lives as long as the token)."""
        deadline = time.monotonic() + timeout
        while "access_token" in self.cookies():
            if time.monotonic() > deadline:
                raise AssertionError("the access cookie did not expire")
            time.sleep(0.1)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def devices(browser, live_server) -> Iterator:
    """`devices()` opens a new device; all are closed after the test."""
    opened: list[Device] = []

    def open_device(**options) -> Device:
        """`options` go to Playwright's `new_context` (user_agent, viewport, color_scheme...)."""
        device = Device(browser, live_server, **options)
        opened.append(device)
        return device

    yield open_device
    for device in opened:
        device.close()


@pytest.fixture
def device(devices) -> Device:
    return devices()


_emails = itertools.count(1)


@pytest.fixture
def email(request) -> str:
    return f"{request.node.name.removeprefix('test_')[:16]}-{next(_emails)}@example.com".replace("_", "-")


SCREENSHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the screenshots of the pages go: tests/browser/screenshots/ (ignored by git),
    overwritten by each run."""
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS
