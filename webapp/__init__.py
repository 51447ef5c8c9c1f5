"""The application factory. Reads like a table of contents."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from . import auth, errors, mail, metrics, observability
from .config import apply_derived_settings, keeps_database_in, load_config, make_private_directory
from .device_binding import ChallengeKeys
from .extensions import db, migrate
from .recovery import RecoveryPolicy
from .retention import PruneSchedule, RetentionPolicy
from .sessions import SessionPolicy

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def create_app(
    test_config: Mapping | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    instance_path: str | os.PathLike[str] | None = None,
) -> Flask:
    app = Webapp(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
        instance_path=os.fspath(instance_path or PROJECT_ROOT / "instance"),
    )
    app.config.update(load_config(os.environ if environ is None else environ, Path(app.instance_path)))
    app.json = SafeJSONProvider(app)
    app.config["CLOCK"] = lambda: datetime.now(timezone.utc)
    if test_config:
        app.config.update(test_config)
    apply_derived_settings(app.config)
    # Before the database is first opened: SQLite then creates its files inside it.
    if keeps_database_in(app.config["SQLALCHEMY_DATABASE_URI"], Path(app.instance_path)):
        make_private_directory(Path(app.instance_path))

    if app.config["TRUSTED_PROXIES"]:
        n = app.config["TRUSTED_PROXIES"]
        # The client address and scheme only: the Host header is never taken from a proxy.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)

    app.extensions["session_policy"] = SessionPolicy.from_config(app.config)
    app.extensions["retention_policy"] = RetentionPolicy.from_config(app.config)
    app.extensions["prune_schedule"] = PruneSchedule()
    app.extensions["recovery_policy"] = RecoveryPolicy.from_config(app.config)
    app.extensions["dbsc_keys"] = ChallengeKeys.from_secrets(
        app.config["SECRET_KEY"], app.config["SECRET_KEY_FALLBACKS"]
    )
    if app.logger.level == logging.NOTSET:
        # Flask's handler prints what reaches it; INFO, so that development's emails (and
        # what the outbox did) show in the server log.
        app.logger.setLevel(logging.INFO)
    register_extensions(app)
    # First and last around every request: its duration, status and log line.
    observability.init_app(app)
    # CSRF, authentication, rate limits, cookies, security headers: see its docstring.
    auth.init_app(app)
    register_blueprints(app)
    errors.register_error_handlers(app)
    register_commands(app)
    return app


class Webapp(Flask):
    def log_exception(self, exc_info) -> None:
        """Flask's "Exception on PATH [METHOD]", with the route's pattern for the path: a
        crash in a recovery link's view must not write its working token to the log."""
        self.logger.error(f"Exception on {observability.loggable_path()} [{request.method}]", exc_info=exc_info)


class SafeJSONProvider(DefaultJSONProvider):
    """JSON bodies nested deeper than Python's recursion limit are malformed input
    (a 400 through `get_json`), not a crash."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"))
    mail.init_app(app)
    metrics.init_app(app)


def register_blueprints(app: Flask) -> None:
    from .account.views import bp as account_bp
    from .api.token_views import bp as api_token_bp
    from .api.views import bp as api_bp
    from .auth.views import bp as auth_bp
    from .dbsc.views import bp as dbsc_bp
    from .main import bp as main_bp
    from .reset.views import bp as reset_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(reset_bp)
    app.register_blueprint(dbsc_bp)
    app.register_blueprint(account_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(api_token_bp)
    app.register_blueprint(main_bp)


def register_commands(app: Flask) -> None:
    from . import cli

    cli.register(app)
