"""Email: Flask-Mail over SMTP when `MAIL_SERVER` is set, the server log otherwise, and
always after the response.

A view queues an `Email` once its unit of work has committed, so a failed send never
undoes what the email reports. The app's `Outbox` renders and sends it in a thread of its
own: a slow or unreachable SMTP server costs no page any time, and a request that sends
an email takes as long as one that sends none (the password-reset form must not tell,
by its timing, which addresses have an account). A send that fails is logged, with the
user's id and never the address or a link, and not retried: the reset form can be used
again, and notices are best effort. A durable outbox (a table, a worker) is the step
beyond this.

Without `MAIL_SERVER`, in development and testing, each email is written to the log
instead, link included, like Django's console backend. In production without it, nothing
is sent: the forgot-password page says so and `flask users reset-link` stands in.

Links are built from `PUBLIC_URL`, never from the Host header of the request, which the
client chooses: a forged Host must not put an attacker's domain in a reset email.
Development without `PUBLIC_URL` falls back to the request's own address.
"""

from __future__ import annotations

import enum
import logging
import os
import smtplib
import ssl
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from flask import Flask, current_app, has_request_context, render_template, request
from flask_mail import Connection, Mail, Message

# Seconds an SMTP connection may wait on the server at each step before the send fails.
SMTP_TIMEOUT = 10
# Threads sending at once per process: a dead server holds one of them for SMTP_TIMEOUT.
SENDING_THREADS = 2
# Emails waiting per process. While the SMTP server is down the queue grows by one
# sign-in notice per sign-in: beyond this, emails are dropped (and logged), not memory.
MAX_QUEUED = 1000

logger = logging.getLogger("webapp.mail")
mail = Mail()


class EmailKind(enum.Enum):
    """Each email: its templates (`templates/email/<name>.txt` and `.html`) and subject.
    Subjects are fixed: nothing a client chose (a User-Agent, an API client's name) may
    stand where a mail program shows it first."""

    PASSWORD_RESET = ("password_reset", "Reset your password")
    PASSWORD_RESET_DONE = ("password_reset_done", "Your password was reset")
    PASSWORD_CHANGED = ("password_changed", "Your password was changed")
    NEW_SIGN_IN = ("new_sign_in", "New sign-in to your account")

    def __init__(self, template: str, subject: str):
        self.template = template
        self.subject = subject


@dataclass(frozen=True)
class Email:
    kind: EmailKind
    to: str | None  # None: a decoy, rendered and sent nowhere
    user_id: int
    context: Mapping[str, object] = field(default_factory=dict)


class NoPublicURL(RuntimeError):
    """A link is needed outside development and `PUBLIC_URL` is not set."""


def init_app(app: Flask) -> None:
    mail.init_app(app)
    app.extensions["outbox"] = Outbox(app)


def can_send_email() -> bool:
    """Whether emails go anywhere: to an SMTP server, or to the log outside production."""
    config = current_app.config
    return config["MAIL_SERVER"] is not None or config["APP_ENV"] != "production"


def send_email(kind: EmailKind, *, to: str, user_id: int, **context: object) -> None:
    """Queue an email; it is rendered and sent after the response. Call it after the
    unit of work that the email reports on has committed."""
    if can_send_email():
        current_app.extensions["outbox"].send(Email(kind=kind, to=to, user_id=user_id, context=context))


def send_decoy(kind: EmailKind, **context: object) -> None:
    """Queue the rendering of an email that goes nowhere, where a real one would reveal
    something by its cost (the forgot-password form, for an address with no account)."""
    if can_send_email():
        current_app.extensions["outbox"].send(Email(kind=kind, to=None, user_id=0, context=context))


def public_link(endpoint: str, **values: object) -> str:
    """An absolute link to `endpoint` for an email or an operator: `PUBLIC_URL` and the
    path. Raises `NoPublicURL` in production without it."""
    config = current_app.config
    # Built without the request: the path only, whatever the Host header said.
    path = current_app.url_map.bind("localhost").build(endpoint, values)
    base = config["PUBLIC_URL"]
    if base is None:
        if config["APP_ENV"] == "production":
            raise NoPublicURL("PUBLIC_URL is not set: links need the address people reach this site at.")
        base = request.url_root.rstrip("/") if has_request_context() else f"http://{config['HOST']}:{config['PORT']}"
    return base + path


class VerifiedConnection(Connection):
    """Flask-Mail's connection with what its own lacks: a timeout, so that a server that
    stops answering holds a sending thread for seconds rather than forever, and STARTTLS
    that checks the server's certificate and name (Flask-Mail's `starttls()` takes any
    certificate, so anybody on the path could read the reset links)."""

    def configure_host(self) -> smtplib.SMTP:
        host = smtplib.SMTP(self.mail.server, self.mail.port, timeout=SMTP_TIMEOUT)
        try:
            if self.mail.use_tls:
                host.starttls(context=ssl.create_default_context())
            if self.mail.username and self.mail.password:
                host.login(self.mail.username, self.mail.password)
        except BaseException:
            host.close()
            raise
        return host

    def __exit__(self, *exc_info) -> None:
        # Once the server has accepted the message, a QUIT that fails (the server hung up
        # first) is no failure to send; and after a failure, it is that one to report.
        if self.host is not None:
            try:
                self.host.quit()
            except (smtplib.SMTPException, OSError):
                self.host.close()


class Outbox:
    """Sends the app's emails from a few threads of this process (made after gunicorn
    forks: a pool is never inherited)."""

    def __init__(self, app: Flask):
        self.app = app
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid: int | None = None
        self._pending: set[Future] = set()

    def send(self, email: Email) -> None:
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=SENDING_THREADS, thread_name_prefix="outbox")
                self._pool_pid = os.getpid()
                self._pending = set()
            if len(self._pending) >= MAX_QUEUED:
                logger.error(
                    "%s email for user %d not sent: %d emails are waiting already",
                    email.kind.template,
                    email.user_id,
                    len(self._pending),
                )
                return
            future = self._pool.submit(self._deliver, email)
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every queued email was sent or given up; False on timeout."""
        with self._lock:
            pending = list(self._pending)
        return not wait(pending, timeout=timeout).not_done

    def _deliver(self, email: Email) -> None:
        with self.app.app_context():
            try:
                message = self._message(email)
                if email.to is None:
                    return
                if self.app.config["MAIL_SERVER"] is None:
                    logger.info(
                        "Email not sent (MAIL_SERVER is not set); it would have said:\nTo: %s\nSubject: %s\n\n%s",
                        email.to,
                        message.subject,
                        message.body,
                    )
                    return
                with VerifiedConnection(self.app.extensions["mail"]) as connection:
                    message.send(connection)
            except Exception as error:  # every failure is logged; none may end the thread
                logger.error("%s email for user %d not sent: %s", email.kind.template, email.user_id, _describe(error))
            else:
                logger.info("%s email for user %d sent", email.kind.template, email.user_id)

    def _message(self, email: Email) -> Message:
        context = {**email.context, "subject": email.kind.subject}
        return Message(
            subject=email.kind.subject,
            recipients=[email.to or "nobody@localhost"],
            body=render_template(f"email/{email.kind.template}.txt", **context),
            html=render_template(f"email/{email.kind.template}.html", **context),
            sender=self.app.config["MAIL_DEFAULT_SENDER"],
            # Out-of-office replies and the like are not sent back to an automatic email.
            extra_headers={"Auto-Submitted": "auto-generated"},
        )


def _describe(error: Exception) -> str:
    """What went wrong, without what an SMTP server's reply may quote (addresses)."""
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{type(error).__name__} (SMTP {error.smtp_code})"
    if isinstance(error, smtplib.SMTPException) or not isinstance(error, OSError):
        return type(error).__name__
    return f"{type(error).__name__}: {error}"
