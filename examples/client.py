#!/usr/bin/env python3
"""A command-line client of the webapp's bearer-token API.

    python examples/client.py --url http://127.0.0.1:5000 login alice@example.com
    python examples/client.py me
    python examples/client.py logout

`login` asks for the password (or reads it from standard input with
`--password-stdin`), signs in with `POST /api/auth/token` and keeps the two tokens in a
file only its owner can read. `me` calls `GET /api/me`; on a 401 it refreshes once with
`POST /api/auth/refresh` and retries, and when the refresh is refused it says the
session has ended and how to sign in again. `logout` revokes the session.

Needs only `requests`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

import requests

DEFAULT_TOKEN_FILE = Path.home() / ".config" / "webapp-client" / "tokens.json"
TIMEOUT = 10


class SessionEnded(Exception):
    """The server refused our refresh token: the session was signed out or lapsed."""


class TokenStore:
    """The token pair on disk, readable and writable by its owner only (0600)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None

    def save(self, tokens: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_suffix(".tmp")
        # Create with 0600 from the first byte: never a moment when others could read it.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(tokens, file)
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class Client:
    def __init__(self, base_url: str, store: TokenStore, client_name: str = "webapp-cli"):
        self.base_url = base_url.rstrip("/")
        self.store = store
        self.client_name = client_name
        self.http = requests.Session()

    def login(self, email: str, password: str) -> dict:
        response = self.http.post(
            f"{self.base_url}/api/auth/token",
            json={"email": email, "password": password, "client_name": self.client_name},
            timeout=TIMEOUT,
        )
        if response.status_code == 429:
            raise SystemExit(f"Too many attempts: try again in {response.headers.get('Retry-After', 'a few')} seconds.")
        if response.status_code != 200:
            raise SystemExit(response.json().get("message", "Sign-in failed."))
        tokens = response.json()
        self.store.save(tokens)
        return tokens

    def refresh(self, tokens: dict) -> dict:
        response = self.http.post(
            f"{self.base_url}/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}, timeout=TIMEOUT
        )
        if response.status_code != 200:
            self.store.clear()
            raise SessionEnded()
        fresh = response.json()
        self.store.save(fresh)
        return fresh

    def get(self, path: str) -> requests.Response:
        """GET with the access token; on a 401, refresh once and retry."""
        tokens = self.store.load()
        if tokens is None:
            raise SessionEnded()
        response = self._get(path, tokens)
        if response.status_code == 401:
            response = self._get(path, self.refresh(tokens))
            if response.status_code == 401:
                raise SessionEnded()
        return response

    def _get(self, path: str, tokens: dict) -> requests.Response:
        return self.http.get(
            f"{self.base_url}{path}", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=TIMEOUT
        )

    def logout(self) -> None:
        tokens = self.store.load()
        if tokens is not None:
            self.http.post(
                f"{self.base_url}/api/auth/revoke", json={"refresh_token": tokens["refresh_token"]}, timeout=TIMEOUT
            )
        self.store.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("WEBAPP_URL", "http://127.0.0.1:5000"))
    parser.add_argument(
        "--token-file", type=Path, default=Path(os.environ.get("WEBAPP_TOKEN_FILE", DEFAULT_TOKEN_FILE))
    )
    parser.add_argument("--client-name", default="webapp-cli", help="how this client appears on the sessions page")
    commands = parser.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login", help="sign in and keep the tokens")
    login.add_argument("email")
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    commands.add_parser("me", help="show who the saved tokens sign in")
    commands.add_parser("logout", help="end the session and forget the tokens")
    args = parser.parse_args(argv)

    client = Client(args.url, TokenStore(args.token_file), client_name=args.client_name)
    try:
        if args.command == "login":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
            tokens = client.login(args.email, password)
            print(f"Signed in as {args.email} (session {tokens['session_id']}).")
        elif args.command == "me":
            me = client.get("/api/me").json()
            print(f"Signed in as {me['email']} (session {me['session_id']}).")
        elif args.command == "logout":
            client.logout()
            print("Signed out.")
    except SessionEnded:
        print("Your session has ended. Sign in again with: client.py login EMAIL", file=sys.stderr)
        return 2
    except requests.ConnectionError:
        print(f"Cannot reach {args.url}.", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
