"""What the server-rendered pages say and how they tie things together, without a
browser: facts on the account page, no developer jargon, confirmations and accessible
names on the devices page, hints and errors tied to their fields. Layout, colour and
axe-core scans are in tests/browser/test_pages.py."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup

from .conftest import PASSWORD, AuthActions, csrf_token_from
from .test_devices import FIREFOX_WINDOWS, SAFARI_IPHONE, browser, page, rows, session_id_of


def soup_of(response) -> BeautifulSoup:
    return BeautifulSoup(response.data, "html.parser")


def test_the_account_page_renders_its_facts_without_script(app, auth, clock):
    auth.register()
    soup = page(auth.client, "/account")
    panel = soup.select_one("[data-session-panel]")
    assert "…" not in panel.get_text() and "..." not in panel.get_text()
    assert panel.select_one('[data-field="created_at"] time').get_text() == "just now"
    # A fresh sign-in without "remember me": idle end and latest end are days ahead.
    assert panel.select_one('[data-testid="expires-at"] time').get_text() == "in 30 days"
    assert panel.select_one('[data-testid="idle-expires-at"] time').get_text() == "in 7 days"
    assert "closing the browser signs you out" in panel.select_one('[data-field="persistent"]').get_text()
    # The activity list is there too, in the same design as on the devices page.
    assert [item["data-kind"] for item in soup.select("[data-activity] [data-event]")] == ["signed_in"]
    assert soup.select_one("[data-activity] .activity-item") is not None


def test_the_account_page_shows_no_session_id_and_no_ticking_token_expiry(auth):
    auth.register()
    session_id = session_id_of(auth.client)
    html = auth.client.get("/account").get_data(as_text=True)
    assert session_id not in html
    assert "Access token" not in html
    assert 'data-testid="session-id"' not in html


def test_the_account_page_links_to_change_password(auth):
    auth.register()
    assert page(auth.client, "/account").find("a", string="Change password")["href"] == "/account/password"


def test_the_sign_in_page_links_to_forgot_password(client):
    link = soup_of(client.get("/auth/login")).find("a", string="Forgot password?")
    assert link["href"] == "/auth/forgot"


def test_a_wrong_password_focuses_the_password_field_with_its_error_tied_to_it(auth):
    auth.register()
    auth.logout()
    soup = soup_of(auth.login(password="not my password"))
    email, password = soup.find("input", {"name": "email"}), soup.find("input", {"name": "password"})
    assert password.has_attr("autofocus") and not email.has_attr("autofocus")
    assert password["aria-invalid"] == "true"
    error = soup.find(id=password["aria-describedby"])
    assert error.get_text(strip=True) == "Incorrect email or password."


def test_an_empty_sign_in_form_focuses_the_first_invalid_field(client):
    auth = AuthActions(client)
    soup = soup_of(client.post("/auth/login", data={"email": "", "password": "", "csrf_token": auth.csrf_token()}))
    invalid = soup.select("[aria-invalid=true]")
    assert [field["name"] for field in invalid] == ["email", "password"]
    assert [field["name"] for field in soup.select("input[autofocus]")] == ["email"]


def test_the_password_form_shows_the_minimum_and_ties_hints_and_errors_to_fields(auth):
    auth.register()
    soup = page(auth.client, "/account/password")
    new_password = soup.find("input", {"name": "new_password"})
    hint = soup.find(id=new_password["aria-describedby"])
    assert "At least 8 characters" in hint.get_text()
    assert soup.find("input", {"name": "current_password"}).has_attr("autofocus")

    token = csrf_token_from(str(soup))
    soup = soup_of(
        auth.client.post(
            "/account/password",
            data={"current_password": PASSWORD, "new_password": "short", "confirm": "short", "csrf_token": token},
        )
    )
    new_password = soup.find("input", {"name": "new_password"})
    assert new_password["aria-invalid"] == "true"
    assert new_password.has_attr("autofocus")
    assert not soup.find("input", {"name": "current_password"}).has_attr("autofocus")
    described = [soup.find(id=part).get_text(" ", strip=True) for part in new_password["aria-describedby"].split()]
    assert any("At least 8 characters" in text for text in described)
    assert any("Use 8 to" in text for text in described)


def test_the_register_form_ties_the_length_hint_to_the_password(client):
    soup = soup_of(client.get("/auth/register"))
    password = soup.find("input", {"name": "password"})
    assert "At least 8 characters" in soup.find(id=password["aria-describedby"]).get_text()


@pytest.fixture
def two_devices(app, auth):
    auth.register()
    auth.logout()
    laptop = browser(app, FIREFOX_WINDOWS, "203.0.113.10")
    phone = browser(app, SAFARI_IPHONE, "198.51.100.7")
    for client in (laptop, phone):
        assert AuthActions(client).login().status_code == 302
    return laptop, phone


def test_each_sign_out_names_its_device_and_asks_to_confirm(two_devices):
    laptop, phone = two_devices
    soup = page(laptop)
    row = soup.find(attrs={"data-session-id": session_id_of(phone)})
    # The disclosure's name says which device; the real submit button is inside it.
    summary = row.select_one("details > summary")
    assert summary.get_text(" ", strip=True) == "Sign out Safari on iPhone"
    confirm = row.select_one("details form button[type=submit]")
    assert confirm.get_text(strip=True) == "Yes, sign out Safari on iPhone"
    assert row.select_one("details form")["action"] == f"/account/sessions/{session_id_of(phone)}/revoke"
    # This device's sign-out is the quiet one, never the loudest button on the page.
    current = soup.select_one('[data-current="true"]')
    assert "quiet" in current.select_one("details > summary")["class"]
    assert "danger" not in " ".join(current.select_one("details form button")["class"])
    # Signing out the others confirms too, and says how many.
    others = soup.select_one('[data-testid="revoke-others"]')
    assert others.find_parent("details") is not None
    assert others.get_text(strip=True) == "Yes, sign out 1 other device"


def test_sign_out_all_other_devices_is_hidden_when_there_are_none(auth):
    auth.register()
    soup = page(auth.client)
    assert len(rows(soup)) == 1
    assert soup.select_one('[data-testid="revoke-others"]') is None
    assert "No other device is signed in." in soup.get_text()


def test_identical_devices_are_told_apart(app, auth, clock):
    auth.register()
    auth.logout()
    first = browser(app, FIREFOX_WINDOWS, "203.0.113.10")
    AuthActions(first).login()
    clock.advance(3600)
    second = browser(app, FIREFOX_WINDOWS, "198.51.100.20")
    AuthActions(second).login()
    soup = page(first)
    by_id = {row["data-session-id"]: row for row in rows(soup)}
    one, two = by_id[session_id_of(first)], by_id[session_id_of(second)]
    assert one.select_one('[data-field="device"]').get_text() == two.select_one('[data-field="device"]').get_text()
    assert one.select_one('[data-field="signed-in"] time').get_text() == "1 hour ago"
    assert two.select_one('[data-field="signed-in"] time').get_text() == "just now"
    assert one.select_one('[data-field="ip"]').get_text() != two.select_one('[data-field="ip"]').get_text()
    assert one["data-current"] == "true" and not two.has_attr("data-current")
    # A device-kind icon, hidden from screen readers: the words say it already.
    assert one.select_one(".device-icon svg")["aria-hidden"] == "true"


def test_an_unknown_device_without_an_address_reads_in_plain_words(app, auth):
    auth.register()
    auth.logout()
    blank = app.test_client()
    blank.environ_base.update(HTTP_USER_AGENT="", REMOTE_ADDR="")
    AuthActions(blank).login()
    soup = page(blank)
    row = soup.select_one('[data-current="true"]')
    assert row.select_one('[data-field="device"]').get_text() == "Unknown device"
    assert row.select_one('[data-field="ip"]').get_text() == "Not recorded"
    newest = soup.select_one("[data-event]").get_text(" ", strip=True)
    assert "Unknown device" in newest and "IP address not recorded" in newest


def test_events_show_a_plain_sentence_not_their_stored_detail(app, two_devices, clock):
    laptop, phone = two_devices
    stolen = phone.get_cookie("refresh_token").value
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    assert phone.get("/account").status_code == 200
    assert phone.get("/account").status_code == 200
    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 1)
    thief = app.test_client()
    thief.set_cookie("refresh_token", stolen)
    thief.get("/account")

    for path in ("/account", "/account/sessions"):
        text = page(laptop, path).get_text(" ", strip=True)
        assert "presented after rotation" not in text, path
        assert "A copy of a device's sign-in was used somewhere else" in text, path


def test_an_anonymous_page_without_a_form_sets_no_cookie_and_mints_no_token(client):
    # A visitor who only reads the home page gets no session cookie (and no CSRF token
    # that nothing on the page could use).
    home = client.get("/")
    assert home.status_code == 200
    assert home.headers.getlist("Set-Cookie") == []
    assert soup_of(home).find("meta", {"name": "csrf-token"}) is None
    # A page with a form still carries its token, and the cookie it is bound to.
    sign_in = client.get("/auth/login")
    assert soup_of(sign_in).find("input", {"name": "csrf_token"})["value"]
    assert any(header.startswith("session=") for header in sign_in.headers.getlist("Set-Cookie"))


def test_signed_in_pages_carry_the_token_for_their_scripts(auth):
    auth.register()
    meta = soup_of(auth.client.get("/account")).find("meta", {"name": "csrf-token"})
    assert meta is not None and meta["content"]
