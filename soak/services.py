"""The private services of a soak: PostgreSQL, Redis and a TLS certificate, all on
127.0.0.1, all in the soak's temporary folder. The shared servers (5432, 6379) are never
touched: every port here is a free one, chosen at start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import trustme

from .processes import free_port, start_group, stop_group


class ServiceError(RuntimeError):
    """A private service would not start, stop or restart; the message says which and why."""


def postgres_binaries() -> Path:
    """The folder of `initdb` and `pg_ctl` (Debian keeps them out of PATH)."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    raise ServiceError("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")


class PrivatePostgres:
    """A PostgreSQL server of the soak's own in `directory` (the approach of
    tests/postgres.py). `initdb` refuses to run as root, so under root the server runs as
    the `postgres` system user, through `runuser`."""

    def __init__(self, directory: Path, port: int):
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self.conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5"
        self._bin = postgres_binaries()

    def _run(self, *command: str | Path, timeout: float = 120) -> None:
        argv = [str(part) for part in command]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(self._bin / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            # A throwaway server: no fsync, but commits reach the WAL, so even an
            # immediate restart loses no committed rotation.
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(self._bin / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start")

    def restart(self, mode: str) -> None:
        """`pg_ctl restart` (it reuses the options of the running server)."""
        self._run(self._bin / "pg_ctl", "-D", self.data, "-l", self.log, "-m", mode, "-w", "restart")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self._bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")


@contextmanager
def private_postgres(directory: Path) -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL for the block, stopped afterwards however it ends."""
    server = PrivatePostgres(directory, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()


class PrivateRedis:
    """A redis-server of the soak's own, without persistence, that may be stopped and
    started again on the same port."""

    def __init__(self, directory: Path, port: int):
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed: apt-get install redis-server")
        self.binary = binary
        self.directory = directory
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = start_group(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.directory)],
            log=self.directory / "redis.log",
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2) as connection:
                    connection.ping()
                    return
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise ServiceError(f"the private redis-server did not start (see {self.directory / 'redis.log'})")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None


@contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(directory, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Certificates:
    """A throwaway certificate authority and a certificate for 127.0.0.1 signed by it."""

    ca_file: Path  # what the browsers trust
    cert_file: Path  # gunicorn --certfile
    key_file: Path  # gunicorn --keyfile


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    certificates = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    authority.cert_pem.write_to_path(str(certificates.ca_file))
    # The chain (the certificate, then the authority's), as a server sends it.
    for index, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(certificates.cert_file), append=index > 0)
    issued.private_key_pem.write_to_path(str(certificates.key_file))
    return certificates
