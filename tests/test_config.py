"""Settings from the environment: secrets, defaults and clear refusals."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from webapp import create_app
from webapp.config import ConfigError, load_config
from webapp.extensions import db

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


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_development_creates_the_instance_folder_private(tmp_path):
    instance = tmp_path / "instance"
    load_config({"APP_ENV": "development"}, instance)
    assert mode(instance) == 0o700
    assert mode(instance / "secret_key") == 0o600


def test_the_sqlite_database_in_the_instance_folder_is_private(tmp_path):
    instance = tmp_path / "instance"
    app = create_app(environ={"APP_ENV": "development", "BCRYPT_ROUNDS": "4"}, instance_path=instance)
    with app.app_context():
        db.session.execute(text("SELECT 1"))  # SQLite creates the database (and -wal, -shm) now
        db.session.remove()
        db.engine.dispose()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'webapp.sqlite3'}"
    assert (instance / "webapp.sqlite3").exists()
    # SQLite makes its files 0644: the folder is what keeps other users out of them.
    assert mode(instance) == 0o700
    assert mode(instance / "secret_key") == 0o600


def test_an_instance_folder_open_to_others_is_made_private(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    instance.chmod(0o755)  # as earlier versions left it
    create_app(environ={"APP_ENV": "testing", "SECRET_KEY": "s" * 40}, instance_path=instance)
    assert mode(instance) == 0o700


def test_an_app_that_keeps_nothing_in_the_instance_folder_does_not_create_it(tmp_path):
    instance = tmp_path / "instance"
    environ = {"APP_ENV": "production", "SECRET_KEY": "s" * 40, "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    create_app(environ=environ, instance_path=instance)
    assert not instance.exists()


def test_production_refuses_cookies_without_secure(tmp_path):
    environ = {"APP_ENV": "production", "SECRET_KEY": "s" * 40, "COOKIE_SECURE": "off"}
    with pytest.raises(ConfigError, match="ALLOW_INSECURE_COOKIES=on") as refusal:
        load_config(environ, tmp_path)
    assert "HTTPS" in str(refusal.value)


def test_production_over_plain_http_when_explicitly_allowed(tmp_path):
    environ = {"APP_ENV": "production", "SECRET_KEY": "s" * 40, "COOKIE_SECURE": "off", "ALLOW_INSECURE_COOKIES": "on"}
    config = load_config(environ, tmp_path)
    assert config["COOKIE_SECURE"] is False
    # The permission alone changes nothing: cookies stay secure unless switched off.
    del environ["COOKIE_SECURE"]
    assert load_config(environ, tmp_path)["COOKIE_SECURE"] is True


def test_fallback_secrets_are_a_comma_separated_list(tmp_path):
    config = load_config({"APP_ENV": "testing", "SECRET_KEY": "new", "SECRET_KEY_FALLBACKS": "old1, old2,"}, tmp_path)
    assert config["SECRET_KEY_FALLBACKS"] == ["old1", "old2"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_ENV", "staging"),
        ("COOKIE_SECURE", "maybe"),
        ("ALLOW_INSECURE_COOKIES", "maybe"),
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
