"""A real SMTP server for the tests: aiosmtpd on a free port of 127.0.0.1, keeping every
message it receives. Tests wait for a message to arrive (a condition, not a sleep)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

ARRIVAL_TIMEOUT = 15
_LINK = re.compile(r"https?://\S+")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    """The aiosmtpd handler: every message received, parsed, in order of arrival.

    `hold()` makes the server stop answering DATA until `release()`: a slow SMTP server.
    """

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._arrived = threading.Condition()
        self._open = threading.Event()
        self._open.set()
        self.waiting = threading.Event()  # set while a DATA command is held

    async def handle_DATA(self, server, session, envelope):
        if not self._open.is_set():
            self.waiting.set()
            # aiosmtpd runs handlers on its event loop: wait in a thread, not on the loop.
            await asyncio.get_running_loop().run_in_executor(None, self._open.wait, ARRIVAL_TIMEOUT * 2)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._arrived:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_for(self, count: int, timeout: float = ARRIVAL_TIMEOUT) -> list[EmailMessage]:
        """The first `count` messages, once they have arrived. Fails after `timeout`."""
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.messages) >= count, timeout=timeout)
        assert arrived, f"expected {count} email(s), {len(self.messages)} arrived"
        return self.messages[:count]

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]


def text_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def html_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


def links_in(message: EmailMessage) -> list[str]:
    return _LINK.findall(text_of(message))


class _Authenticator:
    def __init__(self, username: str, password: str):
        self.credentials = (username.encode(), password.encode())

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == self.credentials
        return AuthResult(success=ok)


@contextmanager
def smtp_server(
    *, tls_context: ssl.SSLContext | None = None, username: str | None = None, password: str | None = None
) -> Iterator[tuple[Mailbox, int]]:
    """An SMTP server on 127.0.0.1: plain, or requiring STARTTLS (and a login) when a TLS
    context (and credentials) are given. Yields its mailbox and port."""
    mailbox = Mailbox()
    port = free_port()
    options = {}
    if tls_context is not None:
        options.update(tls_context=tls_context, require_starttls=True)
    if username is not None:
        options.update(authenticator=_Authenticator(username, password or ""), auth_required=True)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield mailbox, port
    finally:
        mailbox.release()
        controller.stop()
