"""A real MariaDB server for tests: Debian's ``mariadb-server`` (installed with
apt-get when missing), a fresh data directory in a temporary directory, a server on
127.0.0.1 at a free port, stopped when the test session ends.

The fixture ``mariadb_server`` skips only when the server cannot be installed,
saying why; a server that is installed but does not start is an error.

Logins: ML Metadata's MySQL client (MariaDB Connector/C built into its extension)
speaks only ``mysql_native_password``; a user identified by another plugin (e.g.
ed25519) fails with an empty "mysql_real_connect failed: errno: , error: ".
So the store's user is created ``IDENTIFIED VIA mysql_native_password`` (MariaDB's
default for a password, made explicit), with a password, and gets privileges only
on the databases made for it; root logs in without a password over the Unix socket
to set things up.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

APT_INSTALL = ("apt-get", "install", "-y", "--no-install-recommends", "mariadb-server")
# apt-get waits this long for another apt/dpkg to finish instead of failing at once.
APT_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=300")
SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
START_TIMEOUT = 60.0
STORE_USER = "mlmd"


def find_program(*names: str) -> str | None:
    """The first of ``names`` on PATH or in the sbin/bin directories (root's PATH
    has /usr/sbin, a test runner's may not)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SEARCH_DIRS])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_mariadb_installed() -> tuple[str, str]:
    """(mariadbd, mariadb-install-db), installing Debian's mariadb-server with apt-get
    if needed; pytest.skip with the reason when that is impossible."""
    server = find_program("mariadbd", "mysqld")
    install_db = find_program("mariadb-install-db", "mysql_install_db")
    if server and install_db:
        return server, install_db
    command = " ".join(APT_INSTALL)
    if os.geteuid() != 0:
        pytest.skip(f"mariadbd is not installed and `{command}` needs root (uid {os.geteuid()})")
    if not find_program("apt-get"):
        pytest.skip(f"mariadbd is not installed and there is no apt-get to run `{command}`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

    def apt(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["apt-get", *APT_LOCK_WAIT, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    result = apt(*APT_INSTALL[1:])
    if result.returncode != 0:
        # A fresh machine's package lists may be missing or stale.
        apt("update")
        result = apt(*APT_INSTALL[1:])
    server = find_program("mariadbd", "mysqld")
    install_db = find_program("mariadb-install-db", "mysql_install_db")
    if result.returncode != 0 or not (server and install_db):
        pytest.skip(
            f"cannot install MariaDB: `{command}` exited {result.returncode}:\n"
            f"{_tail(result.stderr or result.stdout)}"
        )
    return server, install_db


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class MariaDBServer:
    """A running server: TCP on host:port for the store's user, a Unix socket for root."""

    host: str
    port: int
    user: str
    password: str
    socket_path: Path
    data_dir: Path
    error_log: Path
    pid: int

    def root_connection(self):
        import pymysql

        return pymysql.connect(
            unix_socket=str(self.socket_path), user="root", password="", autocommit=True
        )

    def create_database(self, name: str) -> str:
        """A new empty database that the store's user may use (and only that one)."""
        with self.root_connection() as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
            cursor.execute(f"GRANT ALL PRIVILEGES ON `{name}`.* TO %s@'%%'", (self.user,))
        return name

    def url(self, database: str, with_password: bool = True) -> str:
        """The ``--metadata`` value for ``database``, with the password or without it
        (then it comes from MNIST_TFX_MYSQL_PASSWORD)."""
        secret = f":{quote(self.password, safe='')}" if with_password else ""
        return f"mysql://{self.user}{secret}@{self.host}:{self.port}/{database}"


def _start_server(server: str, install_db: str, root: Path, run_dir: Path) -> MariaDBServer:
    data_dir = root / "data"
    error_log = root / "error.log"
    socket_path = run_dir / "mysqld.sock"
    user = getpass.getuser()
    init = subprocess.run(
        [
            install_db,
            "--no-defaults",
            f"--datadir={data_dir}",
            f"--user={user}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if init.returncode != 0:
        pytest.fail(
            f"mariadb-install-db exited {init.returncode}:\n{_tail(init.stderr or init.stdout)}"
        )
    port = free_port()
    process = subprocess.Popen(
        [
            server,
            "--no-defaults",
            f"--datadir={data_dir}",
            f"--socket={socket_path}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--user={user}",
            f"--pid-file={root / 'mariadbd.pid'}",
            f"--log-error={error_log}",
            "--skip-name-resolve",
            # A test server: small, and no fsync per MLMD transaction.
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=2",
            "--skip-log-bin",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    password = "pw-" + secrets.token_hex(8)
    started = MariaDBServer(
        host="127.0.0.1",
        port=port,
        user=STORE_USER,
        password=password,
        socket_path=socket_path,
        data_dir=data_dir,
        error_log=error_log,
        pid=process.pid,
    )
    try:
        _wait_until_ready(started, process)
        with started.root_connection() as connection, connection.cursor() as cursor:
            cursor.execute(
                "CREATE USER %s@'%%' IDENTIFIED VIA mysql_native_password USING PASSWORD(%s)",
                (STORE_USER, password),
            )
    except BaseException:
        _stop_server(process.pid)
        raise
    return started


def _wait_until_ready(server: MariaDBServer, process: subprocess.Popen) -> None:
    import pymysql

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            log = server.error_log.read_text() if server.error_log.exists() else ""
            pytest.fail(f"mariadbd exited {process.returncode} at start:\n{_tail(log)}")
        try:
            server.root_connection().close()
            return
        except pymysql.err.MySQLError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"mariadbd did not accept connections within {START_TIMEOUT:.0f} s")
            time.sleep(0.2)


def _stop_server(pid: int) -> None:
    """SIGTERM is mariadbd's clean shutdown; SIGKILL if it takes too long."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if finished:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory) -> Iterator[MariaDBServer]:
    """A MariaDB server for this test session (installed first if need be)."""
    server, install_db = ensure_mariadb_installed()
    root = tmp_path_factory.mktemp("mariadb")
    # Unix socket paths are limited to about 100 bytes; pytest's may be longer.
    run_dir = Path(tempfile.mkdtemp(prefix="mariadb-"))
    started = _start_server(server, install_db, root, run_dir)
    try:
        yield started
    finally:
        _stop_server(started.pid)
        shutil.rmtree(run_dir, ignore_errors=True)
