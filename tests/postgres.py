"""A real PostgreSQL server for the tests: Debian's binaries, a cluster in a temp directory, one database per test.

The server is started by initdb and pg_ctl as an unprivileged user (PostgreSQL refuses to run as root:
as root the suite runs them as the `postgres` account, or `nobody`), listens on a free loopback port and
trusts local connections. `fresh_database()` creates an empty database from the template, so every test
starts with nothing in it, and in milliseconds.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

USER = "stepline"
STARTUP_SECONDS = 30


def binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL's server is not installed."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").is_file() and Path(candidate, "pg_ctl").is_file():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _account() -> pwd.struct_passwd | None:
    """Whom to run the server as: None for whoever we are, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("PostgreSQL cannot run as root, and there is no postgres or nobody account to run it as")


class PostgresServer:
    def __init__(self, root: Path) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's server is not installed (apt-get install postgresql)")
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.account = _account()
        self.host = "127.0.0.1"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.account is not None:
            command = ["setpriv", f"--reuid={self.account.pw_uid}", f"--regid={self.account.pw_gid}",
                       "--clear-groups", *command]
        try:
            return subprocess.run(command, capture_output=True, text=True, check=check, timeout=STARTUP_SECONDS * 2,
                                  cwd=self.root)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"{args[0]} failed: {exc.stderr or exc.stdout}") from None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.account is not None:
            # The server's account must reach its folder: the temp folder above it is root's and private.
            for folder in (self.root.parent, self.root):
                os.chown(folder, self.account.pw_uid, self.account.pw_gid)
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8",
                      "--locale", "C")
        self.resume()

    def resume(self) -> None:
        """Start the (stopped) server again, on the same port and data: the database comes back."""
        options = (f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w",
                  "-t", str(STARTUP_SECONDS), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate`: as if it crashed); its data stays for `resume`."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    def fresh_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL for the length of the block, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="stepline-pg-"))
    server = PostgresServer(root / "cluster")
    try:
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
