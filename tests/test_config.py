"""Settings from the environment: secrets, defaults and clear refusals."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from webapp.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config({"APP_ENV": "production"}, tmp_path)


def test_wsgi_says_why_it_refuses_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"],
        cwd=ROOT,
        env={"APP_ENV": "production", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_development_generates_a_secret_once_and_keeps_it_private(tmp_path):
    first = load_config({"APP_ENV": "development"}, tmp_path)["SECRET_KEY"]
    second = load_config({"APP_ENV": "development"}, tmp_path)["SECRET_KEY"]
    assert first == second and len(first) >= 32
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def test_cookie_secure_is_on_by_default_only_in_production(tmp_path):
    assert load_config({"APP_ENV": "production", "SECRET_KEY": "s" * 40}, tmp_path)["COOKIE_SECURE"] is True
    assert load_config({"APP_ENV": "development"}, tmp_path)["COOKIE_SECURE"] is False
    assert load_config({"APP_ENV": "development", "COOKIE_SECURE": "on"}, tmp_path)["COOKIE_SECURE"] is True


def test_fallback_secrets_are_a_comma_separated_list(tmp_path):
    config = load_config({"APP_ENV": "testing", "SECRET_KEY": "new", "SECRET_KEY_FALLBACKS": "old1, old2,"}, tmp_path)
    assert config["SECRET_KEY_FALLBACKS"] == ["old1", "old2"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_ENV", "staging"),
        ("COOKIE_SECURE", "maybe"),
        ("COOKIE_SAMESITE", "None"),
        ("ACCESS_TOKEN_TTL", "fifteen"),
        ("ACCESS_TOKEN_TTL", "0"),
        ("LOGIN_LIMIT_PER_IP", "lots"),
        ("BCRYPT_ROUNDS", "2"),
    ],
)
def test_malformed_settings_stop_the_start_with_their_name(tmp_path, name, value):
    environ = {"APP_ENV": "testing", "SECRET_KEY": "s" * 40, name: value}
    with pytest.raises(ConfigError, match=name):
        load_config(environ, tmp_path)
