"""A throwaway PostgreSQL server for the warehouse tests: Debian's `postgresql` binaries, a data directory in a
temporary folder, 127.0.0.1 on a free port, a login role with a password (checked over TCP), stopped after.

`make test` installs the server and the JDBC driver (`libpostgresql-jdbc-java`) when it runs as root; without
them the tests skip, or fail when CI is set.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

DRIVER_JAR = "/usr/share/java/postgresql.jar"


def _missing(what: str) -> None:
    message = f"{what} is not installed (make test installs it as root with apt-get)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must have it")
    pytest.skip(f"{message}; with CI set this test fails instead")


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        _missing("PostgreSQL (Debian package postgresql)")
    if not Path(DRIVER_JAR).is_file():
        _missing(f"the PostgreSQL JDBC driver {DRIVER_JAR} (Debian package libpostgresql-jdbc-java)")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    """A running server: connect as `user` with the password in the environment variable `password_env`."""

    port: int
    socket_dir: Path
    bin_dir: Path
    run_as: list[str]
    user: str = "segment"
    password: str = "s3gment-test-pw"
    password_env: str = "SEGMENT_TEST_PG_PASSWORD"
    database: str = "shop"

    @property
    def url(self) -> str:
        return f"jdbc:postgresql://127.0.0.1:{self.port}/{self.database}"

    def psql(self, sql: str, database: str | None = None, check: bool = True) -> str:
        """`sql` through psql over TCP as the login role (unaligned, no header): what a BI user would see."""
        done = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database or self.database,
                "-v",
                "ON_ERROR_STOP=1",
                "-A",
                "-t",
                "-F",
                "|",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PGPASSWORD": self.password},
        )
        if check and done.returncode != 0:
            raise AssertionError(f"psql failed: {done.stderr}")
        return done.stdout if check else done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path):
    """Initialise and start a server under `folder`; returns (Postgres, stop function)."""
    bin_dir = _bin()
    data, sockets = folder / "data", folder / "sockets"
    for d in (folder, data, sockets):
        d.mkdir(parents=True, exist_ok=True)
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        postgres = pwd.getpwnam("postgres")
        for d in (folder, data, sockets):
            os.chown(d, postgres.pw_uid, postgres.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"),
         "-w", "-t", "60", "start"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    server = Postgres(port=port, socket_dir=sockets, bin_dir=bin_dir, run_as=run_as)

    def admin(sql: str, database: str = "postgres") -> None:
        subprocess.run(
            [*run_as, str(bin_dir / "psql"), "-h", str(sockets), "-p", str(port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    admin(f"CREATE ROLE {server.user} LOGIN PASSWORD '{server.password}'")
    admin(f"CREATE DATABASE {server.database} OWNER {server.user}")

    def stop() -> None:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(folder, ignore_errors=True)

    return server, stop
