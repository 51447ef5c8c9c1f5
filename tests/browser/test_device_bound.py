"""Device-bound sessions (DBSC) end to end: real Chromium, `make run`'s gunicorn over
HTTPS with production settings, and cookies that expire by the wall clock.

Chromium registers a key for the session it signs in with, renews the expired access
cookie with that key before it sends the request that needs it, and a copy of its cookie
jar (requests, without the key) works only until the copied access cookie expires: then
it is refused, and the browser, still signed in, sees an alert naming its own device.

How Chromium 156 is made to do DBSC here is in /work/shared/DBSC.md: two features (the
second gives software keys instead of a TPM), a certificate Chromium takes as valid
(`--ignore-certificate-errors-spki-list`: `--ignore-certificate-errors` silently turns
DBSC off) and a user-data-dir. DevTools reports every DBSC step
(`Network.deviceBoundSessionEventOccurred`) and, per request, what DBSC did with it
(`deviceBoundSessionUsages`); the test reads both.

The cookies' lifetime is compressed from minutes to seconds, which DBSC does not expect:
see `DBSC_FEATURES` for the one thing that changes in Chromium because of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from webapp.device_binding import IN_FLIGHT_LEEWAY

from ..conftest import PASSWORD
from ..test_serving import STARTUP_TIMEOUT, flask_command, gunicorn, make_run_environ, make_run_gunicorn_command
from .conftest import ACTION_TIMEOUT_MS, CHROMIUM, LAUNCH_ARGS, browser_tests

pytestmark = browser_tests

EMAIL = "bound@example.com"
# Seconds an access cookie lives. The test waits it out twice (the browser expires
# cookies by the wall clock), so it is short; long enough for every step between the
# browser getting a cookie and the test using a copy of it.
ACCESS_TOKEN_TTL = 15
ACCESS_COOKIE = "__Host-access_token"
REFRESH_COOKIE = "__Host-refresh_token"
# DBSC.md's two features, with Chromium's signing quota lifted (`RefreshQuota/false`, a
# parameter of DeviceBoundSessions). Chromium refreshes proactively once the bound cookie
# has two minutes or less to live (kProactiveRefreshThreshold, 120 s) and allows 6
# signatures per site in 9 minutes. A 15-minute cookie costs one signature every
# 13 minutes or so; this test's 15-second one costs two per in-scope navigation (seen
# here: a proactive refresh, or a deferred one then a proactive one), so the quota would
# run out at the fifth page. What the app does then (a request Chromium lets go with
# `Secure-Session-Skipped`) is tested in tests/test_dbsc.py.
DBSC_FEATURES = "DeviceBoundSessions:RefreshQuota/false,EnableBoundSessionCredentialsSoftwareKeysForManualTesting"
# What Playwright enables itself: a custom --enable-features replaces its list.
PLAYWRIGHT_FEATURES = "CDPScreenshotNewSurface,SkipListAccountsWithoutGaiaCookies"
# No password manager (its leak check sends a hash of the credentials to Google), no
# autofill (it asks Google about each form), no Google sign-in, no Safe Browsing.
QUIET_PREFERENCES = {
    "credentials_enable_service": False,
    "profile": {"password_manager_enabled": False, "password_manager_leak_detection": False},
    "autofill": {"enabled": False, "profile_enabled": False, "credit_card_enabled": False},
    "signin": {"allowed": False},
    "safebrowsing": {"enabled": False},
}
THIEF_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"


@dataclass
class TlsServer:
    url: str
    ca_file: Path
    leaf_spki_sha256: str
    error_log: Path
    access_log: Path

    def __call__(self, path: str = "/") -> str:
        return self.url + path

    def logs(self) -> str:
        return (
            f"--- gunicorn error log ---\n{self.error_log.read_text()}\n"
            f"--- access log ---\n{self.access_log.read_text()}"
        )


def spki_sha256(cert_pem: bytes) -> str:
    """What `--ignore-certificate-errors-spki-list` names: base64 of the SHA-256 of the
    certificate's SubjectPublicKeyInfo."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def wait_until_serving_tls(process: subprocess.Popen, error_log: Path, ca_file: Path) -> str:
    """tests/test_serving.py's `wait_until_serving`, over HTTPS (gunicorn 27 logs
    `Listening at: https://...` when it serves TLS; either scheme is accepted)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    base_url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{error_log.read_text()}")
        text = error_log.read_text()
        if base_url is None and (match := re.search(r"Listening at: https?://(127\.0\.0\.1:\d+)", text)):
            base_url = f"https://{match.group(1)}"
        if base_url and "Booting worker" in text:
            try:
                if requests.get(base_url + "/healthz", timeout=10, verify=ca_file).status_code == 200:
                    return base_url
            except (requests.ConnectionError, requests.Timeout):
                pass
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not serve HTTPS within {STARTUP_TIMEOUT}s:\n{error_log.read_text()}")


@pytest.fixture
def tls_server(tmp_path) -> Iterator[TlsServer]:
    """`make run`'s gunicorn with production settings (Secure `__Host-` cookies), over
    HTTPS with a certificate for 127.0.0.1 from a throwaway CA, on a fresh SQLite
    database holding one account."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(ca_file)
    leaf.private_key_pem.write_to_path(key_file)
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))

    env = make_run_environ(
        tmp_path, APP_ENV="production", ACCESS_TOKEN_TTL=str(ACCESS_TOKEN_TTL), DEVICE_BOUND_SESSIONS="on"
    )
    flask_command(env, "db", "upgrade")
    flask_command(env, "users", "create", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
    # What `make run TLS_CERT_FILE=... TLS_KEY_FILE=...` adds to the line.
    command = [*make_run_gunicorn_command(), "--certfile", str(cert_file), "--keyfile", str(key_file)]
    error_log, access_log = tmp_path / "gunicorn.log", tmp_path / "access.log"
    with gunicorn(command, env, error_log, access_log) as process:
        url = wait_until_serving_tls(process, error_log, ca_file)
        yield TlsServer(
            url=url,
            ca_file=ca_file,
            leaf_spki_sha256=spki_sha256(leaf.cert_chain_pems[0].bytes()),
            error_log=error_log,
            access_log=access_log,
        )


@dataclass
class NetLog:
    """What Chromium's net log (`--log-net-log`, complete once the browser has exited)
    says about the whole browser, its own fetches (DBSC's among them) included."""

    urls: list[str]  # every URL request started
    lookups: set[str]  # host names resolved
    egress: set[str]  # addresses connected to over TCP, or sent a datagram


def read_net_log(path: Path) -> NetLog:
    log = json.loads(path.read_text())
    kinds = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    urls, lookups, addresses, tcp, sending = [], set(), {}, set(), set()
    for event in log["events"]:
        kind, params, source = kinds.get(event["type"]), event.get("params", {}), event["source"]["id"]
        if kind == "URL_REQUEST_START_JOB" and "url" in params:
            urls.append(params["url"])
        elif kind == "HOST_RESOLVER_MANAGER_JOB" and "host" in params:
            lookups.add(params["host"])
        elif kind in ("TCP_CONNECT_ATTEMPT", "UDP_CONNECT") and "address" in params:
            addresses[source] = params["address"]
            if kind == "TCP_CONNECT_ATTEMPT":
                tcp.add(params["address"])
        elif kind in ("SOCKET_BYTES_SENT", "UDP_BYTES_SENT"):
            sending.add(source)
    # A UDP socket that is only connected sends nothing: Chromium does that to pick a
    # local address.
    return NetLog(urls=urls, lookups=lookups, egress=tcp | {addresses.get(source, "?") for source in sending})


@dataclass
class Chromium:
    """One Chromium profile with DBSC on, its page, and what DevTools and Playwright saw."""

    context: object
    page: object
    server: TlsServer
    net_log_file: Path
    dbsc_events: list[dict] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    responses: list[tuple[str, int, dict]] = field(default_factory=list)
    # DevTools' view of each request hop: its URL, the headers it went out with, and what
    # DBSC did with it (deviceBoundSessionUsages: Deferred, ProactiveRefreshAttempted...).
    sent: list[dict] = field(default_factory=list)
    closed: bool = False

    def cookies(self) -> dict[str, dict]:
        return {cookie["name"]: cookie for cookie in self.context.cookies(self.server.url)}

    def cookie_value(self, name: str) -> str | None:
        cookie = self.cookies().get(name)
        return None if cookie is None else cookie["value"]

    def wait_for(self, condition: Callable[[], object], timeout: float, what: str):
        """Poll `condition` until it is true, at most `timeout` seconds. Waits with
        Playwright, so that DevTools events keep arriving meanwhile."""
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout}s\n{self.diagnostics()}")
            self.page.wait_for_timeout(100)
        return result

    def dbsc_event(self, kind: str, since: int = 0, **details) -> dict | None:
        """The first successful DBSC event of `kind` (creation, refresh, challenge) from
        index `since` on whose details have the values `details`."""
        for event in self.dbsc_events[since:]:
            found = event.get(f"{kind}EventDetails")
            if event.get("succeeded") and found and all(found.get(name) == value for name, value in details.items()):
                return event
        return None

    def usages(self, url: str, since: int = 0) -> list[str]:
        """What DBSC did with the requests for `url` sent from hop `since` on."""
        return [usage for entry in self.sent[since:] if entry["url"] == url for usage in entry.get("usages", [])]

    def close(self) -> NetLog:
        if not self.closed:
            self.closed = True
            self.context.close()
        return read_net_log(self.net_log_file)

    def diagnostics(self) -> str:
        sent = "\n".join(
            f"{entry['url']}\n    usages: {entry.get('usages')}\n    "
            + "\n    ".join(f"{name}: {value}" for name, value in sorted(entry.get("headers", {}).items()))
            for entry in self.sent
            if "/static/" not in entry["url"]
        )
        received = "\n".join(
            f"{status} {url}\n    " + "\n    ".join(f"{name}: {value}" for name, value in sorted(headers.items()))
            for url, status, headers in self.responses
            if "/static/" not in url
        )
        cookies = "(browser closed)" if self.closed else json.dumps(list(self.cookies().values()), indent=1)
        return (
            f"--- requests as DevTools saw them ---\n{sent}\n"
            f"--- DevTools DBSC events ---\n{json.dumps(self.dbsc_events, indent=1)}\n"
            f"--- responses the page saw ---\n{received}\n"
            f"--- cookies ---\n{cookies}\n"
            f"{self.server.logs()}"
        )


@pytest.fixture
def chromium(tls_server, tmp_path) -> Iterator[Chromium]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    net_log_file = tmp_path / "netlog.json"
    args = [
        *LAUNCH_ARGS,
        f"--enable-features={DBSC_FEATURES},{PLAYWRIGHT_FEATURES}",
        f"--ignore-certificate-errors-spki-list={tls_server.leaf_spki_sha256}",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-pings",
        # Chromium's own services still try Google (Debian's launcher sets API keys): no
        # host name resolves, so none of it leaves the machine.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--log-net-log={net_log_file}",
    ]
    profile = tmp_path / "chromium-profile"
    (profile / "Default").mkdir(parents=True)
    (profile / "Default" / "Preferences").write_text(json.dumps(QUIET_PREFERENCES))
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=args,
            base_url=tls_server.url,
            viewport={"width": 1100, "height": 800},
        )
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        page = context.pages[0] if context.pages else context.new_page()
        browser = Chromium(context=context, page=page, server=tls_server, net_log_file=net_log_file)
        context.on("request", lambda request: browser.requested.append(request.url))
        context.on(
            "response", lambda response: browser.responses.append((response.url, response.status, response.headers))
        )

        def will_be_sent(event):
            browser.requested.append(event["request"]["url"])
            # A redirect goes on under the same requestId: one entry per hop.
            browser.sent.append({"id": event["requestId"], "url": event["request"]["url"]})

        def extra_info(event):
            for entry in reversed(browser.sent):
                if entry["id"] == event["requestId"] and "headers" not in entry:
                    entry["headers"] = event.get("headers", {})
                    entry["usages"] = [usage["usage"] for usage in event.get("deviceBoundSessionUsages", [])]
                    return

        cdp = context.new_cdp_session(page)
        cdp.on("Network.requestWillBeSent", will_be_sent)
        cdp.on("Network.requestWillBeSentExtraInfo", extra_info)
        cdp.on("Network.deviceBoundSessionEventOccurred", lambda event: browser.dbsc_events.append(event))
        cdp.send("Network.enable")
        cdp.send("Network.enableDeviceBoundSessions", {"enable": True})
        try:
            yield browser
        finally:
            browser.close()


def copied_cookie_jar(cookies: list[dict], server: TlsServer) -> requests.Session:
    """Another machine holding a copy of the browser's cookies, and not its key."""
    thief = requests.Session()
    # Not the environment's CA bundle (REQUESTS_CA_BUNDLE would win over `verify`), nor proxies.
    thief.trust_env = False
    thief.verify = str(server.ca_file)
    thief.headers["User-Agent"] = THIEF_USER_AGENT
    for cookie in cookies:
        thief.cookies.set(
            cookie["name"],
            cookie["value"],
            domain=cookie["domain"],
            path=cookie["path"],
            secure=cookie["secure"],
            expires=None if cookie["expires"] < 0 else int(cookie["expires"]),
            rest={"HttpOnly": None} if cookie["httpOnly"] else {},
        )
    return thief


def test_a_device_bound_session_renews_with_its_key_and_a_copied_cookie_jar_stops(chromium, tls_server):
    started = time.monotonic()
    page = chromium.page

    # Signing in through the form: the answer offers registration; Chromium makes a key
    # and registers it.
    page.goto("/auth/login")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account")
    created = chromium.wait_for(lambda: chromium.dbsc_event("creation"), 15, "a successful DBSC registration")
    session_id = created["sessionId"]
    described = created["creationEventDetails"]["newSession"]
    assert described["refreshUrl"] == tls_server("/auth/dbsc/refresh")
    assert [craving["name"] for craving in described["cookieCravings"]] == [ACCESS_COOKIE]

    page.goto("/account/sessions")
    mine = page.locator("[data-current=true]")
    assert mine.get_attribute("data-device-bound") == "true", chromium.diagnostics()
    assert mine.get_by_test_id("device-bound").inner_text() == "Bound to this device"
    assert mine.get_attribute("data-session-id") == session_id
    device_name = mine.locator("[data-field=device]").inner_text()

    # Once the access cookie has expired, browsing goes on: Chromium holds the request
    # back, renews the cookie with its key, then sends it.
    access_before, refresh_before = chromium.cookie_value(ACCESS_COOKIE), chromium.cookie_value(REFRESH_COOKIE)
    assert access_before and refresh_before
    chromium.wait_for(
        lambda: ACCESS_COOKIE not in chromium.cookies(), ACCESS_TOKEN_TTL + 10, "the access cookie to expire"
    )
    events_before, sent_before = len(chromium.dbsc_events), len(chromium.sent)
    page.goto("/account")
    assert urlsplit(page.url).path == "/account", chromium.diagnostics()
    chromium.wait_for(
        lambda: chromium.dbsc_event(
            "refresh", events_before, refreshResult="Refreshed", wasFullyProactiveRefresh=False
        ),
        10,
        "a DBSC refresh of the expired cookie",
    )
    assert "Deferred" in chromium.usages(tls_server("/account"), sent_before), chromium.diagnostics()
    assert chromium.cookie_value(ACCESS_COOKIE) not in (None, access_before)
    assert chromium.cookie_value(REFRESH_COOKIE) not in (None, refresh_before)

    # A copy of the whole cookie jar, used from another machine, works while the copied
    # access cookie does...
    copied = chromium.context.cookies(tls_server.url)
    [copied_access] = [cookie for cookie in copied if cookie["name"] == ACCESS_COOKIE]
    thief = copied_cookie_jar(copied, tls_server)
    served = thief.get(tls_server("/account"), allow_redirects=False, timeout=10)
    assert served.status_code == 200, (served.status_code, served.headers)

    # ...and is refused once it has expired (past the server's leeway for requests in
    # flight): only the device's key renews this session.
    expired_at = copied_access["expires"] + IN_FLIGHT_LEEWAY.total_seconds() + 1
    chromium.wait_for(lambda: time.time() > expired_at, ACCESS_TOKEN_TTL + 15, "the copied access cookie to expire")
    refused = thief.get(tls_server("/account"), allow_redirects=False, timeout=10)
    assert refused.status_code in (302, 303), (refused.status_code, refused.headers)
    assert urlsplit(refused.headers["Location"]).path == "/auth/login"

    # The browser itself goes on, bound, and its devices page names the device whose
    # cookies were copied.
    events_before = len(chromium.dbsc_events)
    page.goto("/account/sessions")
    assert urlsplit(page.url).path == "/account/sessions", chromium.diagnostics()
    alert = page.get_by_test_id("copy-alert")
    assert alert.is_visible(), chromium.diagnostics()
    assert "Copied cookies were refused" in alert.inner_text()
    assert alert.locator("[data-field=alert-device]").inner_text() == device_name
    mine = page.locator("[data-current=true]")
    assert mine.get_attribute("data-session-id") == session_id
    assert mine.get_attribute("data-device-bound") == "true"
    chromium.wait_for(
        lambda: chromium.dbsc_event("refresh", events_before, refreshResult="Refreshed"), 10, "a DBSC refresh"
    )
    failed = [event for event in chromium.dbsc_events if not event["succeeded"]]

    # Nothing went anywhere but this server: what the page asked for, and everything the
    # browser sent at all (its net log: DBSC's own requests, Chromium's services).
    elsewhere = {url for url in chromium.requested if not url.startswith(tls_server.url + "/")}
    assert not elsewhere, elsewhere
    net_log = chromium.close()
    assert net_log.egress == {urlsplit(tls_server.url).netloc}, net_log.egress
    assert not net_log.lookups, net_log.lookups
    assert tls_server("/auth/dbsc/register") in net_log.urls
    assert tls_server("/auth/dbsc/refresh") in net_log.urls
    blocked = sorted({url.split("?")[0] for url in net_log.urls if not url.startswith(tls_server.url + "/")})
    print(
        f"\nDBSC end to end in {time.monotonic() - started:.1f}s: {len(chromium.dbsc_events)} DevTools DBSC events, "
        f"{net_log.urls.count(tls_server('/auth/dbsc/refresh'))} refresh requests; "
        f"failed events: {[event.get('creationEventDetails', event.get('refreshEventDetails')) for event in failed]}; "
        f"requests Chromium's own services tried (no name resolves): {blocked}"
    )
