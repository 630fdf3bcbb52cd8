"""Where ML Metadata lives, from the ``--metadata`` value: a SQLite file (the
default; a path or ``sqlite:///path``) or a MySQL / MariaDB database
(``mysql://user[:password]@host[:port]/database``), as an MLMD ``ConnectionConfig``.

Also here: a description of a store for messages (never with the password),
opening a store for reading, and one run at a time per store: the SQLite flock
of ``pipeline/metadata_lock.py`` or, for MySQL, a named lock on the server.

No TensorFlow or TFX is imported, so the CLI can check the flag before anything
heavy loads. The configs are field for field what TFX's
``sqlite_metadata_connection_config`` and ``mysql_metadata_connection_config``
build (the tests compare them), without the former's side effect of creating the
SQLite file's directory while a flag is only being parsed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ml_metadata.proto import metadata_store_pb2

from pipeline.metadata_lock import MetadataBusyError, exclusive_metadata

if TYPE_CHECKING:
    from ml_metadata import metadata_store

ConnectionConfig = metadata_store_pb2.ConnectionConfig

# Read when the URL has no password, so that it need not be on the command line
# (where `ps` shows it to every user of the machine).
PASSWORD_ENV = "MNIST_TFX_MYSQL_PASSWORD"
DEFAULT_MYSQL_PORT = 3306
EXPECTED_FORMS = (
    "expected a SQLite file path, sqlite:///absolute/path, or "
    f"mysql://user[:password]@host[:port]/database (port default {DEFAULT_MYSQL_PORT}; "
    f"the password may instead be in ${PASSWORD_ENV})"
)
# MLMD puts the name into CREATE DATABASE unquoted: keep to what needs no quoting.
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_$]{1,64}")
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SCHEME_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?://)?")
# MySQL refuses named-lock names longer than 64 characters.
_LOCK_PREFIX = "mnist_tfx.metadata."
_MAX_LOCK_NAME = 64

log = logging.getLogger(__name__)


class MetadataConnectionError(RuntimeError):
    """The MySQL server of an ML Metadata store cannot be reached or refuses the login."""


def redact_password(value: str) -> str:
    """``value`` with the password of a ``scheme://user:password@...`` URL replaced by
    ***, even when the URL is malformed (a '/' in the password, no '//')."""
    scheme = _SCHEME_PREFIX.match(value)
    if not scheme or scheme.group(1).lower() == "sqlite":
        return value
    # Host and database never hold '@', so the userinfo ends at the last one.
    userinfo, at, rest = value[scheme.end() :].rpartition("@")
    if not at or ":" not in userinfo:
        return value
    return value[: scheme.end()] + userinfo.split(":", 1)[0] + ":***@" + rest


def _invalid(value: str, problem: str) -> ValueError:
    return ValueError(f"--metadata {redact_password(value)!r}: {problem}; {EXPECTED_FORMS}")


def _sqlite_config(path: Path) -> ConnectionConfig:
    config = ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    return config


def _mysql_config(value: str, environ: Mapping[str, str]) -> ConnectionConfig:
    parts = urlsplit(value)
    if "@" in parts.path:
        raise _invalid(value, "a '/' in the user or password must be written %2F")
    if parts.query or parts.fragment:
        raise _invalid(value, "options after '?' or '#' are not supported (write '?' as %3F)")
    try:
        port = parts.port
    except ValueError:
        raise _invalid(value, "the port must be a number from 1 to 65535") from None
    if port == 0:
        raise _invalid(value, "the port must be a number from 1 to 65535")
    user = unquote(parts.username or "")
    if not user:
        raise _invalid(value, "no user name before '@'")
    if not parts.hostname:
        raise _invalid(value, "no host")
    database = parts.path[1:]
    if not database:
        raise _invalid(value, "no database name after the host")
    if not _DATABASE_NAME.fullmatch(database):
        raise _invalid(
            value, f"database name {database!r} must be 1 to 64 letters, digits, '_' or '$'"
        )
    password = parts.password
    password = unquote(password) if password is not None else environ.get(PASSWORD_ENV, "")
    config = ConnectionConfig()
    config.mysql.host = parts.hostname
    config.mysql.port = port or DEFAULT_MYSQL_PORT
    config.mysql.database = database
    config.mysql.user = user
    config.mysql.password = password
    return config


def metadata_connection_config(
    value: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> ConnectionConfig:
    """The ML Metadata ``ConnectionConfig`` that ``--metadata VALUE`` names.

    A plain path (resolved to an absolute one, as the local runner always did) or
    ``sqlite:///absolute/path`` is a SQLite file, created on first use.
    ``mysql://user[:password]@host[:port]/database`` is a MySQL or MariaDB
    database, created by MLMD on first use if the user may; user and password are
    percent-decoded, so ``p%40ss`` is ``p@ss``. Without a password in the URL, the
    environment variable ``MNIST_TFX_MYSQL_PASSWORD`` gives it (empty if unset).
    Anything else raises ValueError naming the value (password hidden) and the
    forms expected.
    """
    text = os.fspath(value)
    environ = os.environ if environ is None else environ
    if not text.strip():
        raise _invalid(text, "empty value")
    scheme = _URL_SCHEME.match(text)
    if scheme:
        kind = scheme.group(1).lower()
        if kind == "mysql":
            return _mysql_config(text, environ)
        if kind == "sqlite":
            path = text[scheme.end() :]
            if not path.startswith("/"):
                raise _invalid(text, "a sqlite URL takes an absolute path: sqlite:///path")
            return _sqlite_config(Path(path))
        raise _invalid(text, f"unsupported scheme {kind!r}")
    if re.match(r"(?i)(mysql|sqlite):", text):
        raise _invalid(text, "a URL needs '://' after the scheme")
    return _sqlite_config(Path(text).resolve())


def is_sqlite(config: ConnectionConfig) -> bool:
    return config.WhichOneof("config") == "sqlite"


def is_mysql(config: ConnectionConfig) -> bool:
    return config.WhichOneof("config") == "mysql"


def sqlite_path(config: ConnectionConfig) -> Path | None:
    """The SQLite file of a SQLite config, else None."""
    return Path(config.sqlite.filename_uri) if is_sqlite(config) else None


def describe_metadata(config: ConnectionConfig) -> str:
    """The store for messages and logs: the SQLite path, or mysql://user@host:port/database.

    Never the password: log this, not the config itself (whose text form holds it).
    """
    kind = config.WhichOneof("config")
    if kind == "sqlite":
        return config.sqlite.filename_uri
    if kind == "mysql":
        mysql = config.mysql
        host = f"[{mysql.host}]" if ":" in mysql.host else mysql.host
        where = f"{host}:{mysql.port or DEFAULT_MYSQL_PORT}"
        if mysql.socket:
            where = f"{where} (socket {mysql.socket})"
        return f"mysql://{mysql.user}@{where}/{mysql.database}"
    return f"ML Metadata store ({kind or 'unset'})"


def _connect_mysql(config: ConnectionConfig, connect_timeout: float = 10):
    """A pymysql connection as the store's user, not into its database (which may not
    exist yet). Raises MetadataConnectionError with the reason (refused, access denied)."""
    import pymysql

    mysql = config.mysql
    options = {
        "user": mysql.user,
        "password": mysql.password,
        "connect_timeout": connect_timeout,
        "autocommit": True,
    }
    if mysql.socket:
        options["unix_socket"] = mysql.socket
    else:
        options["host"] = mysql.host
        options["port"] = mysql.port or DEFAULT_MYSQL_PORT
    try:
        return pymysql.connect(**options)
    except pymysql.err.MySQLError as error:
        reason = error.args[1] if len(error.args) > 1 else str(error)
        raise MetadataConnectionError(
            f"{describe_metadata(config)}: cannot connect to MySQL: {reason}"
        ) from None


def open_metadata_store(
    config: ConnectionConfig, read_only: bool = True
) -> metadata_store.MetadataStore:
    """An MLMD ``MetadataStore`` on ``config``, for reading by default.

    Read-only means SQLite's READONLY mode, and for MySQL that the database is not
    created when it does not exist. MLMD's own MySQL errors are empty ("errno: ,
    error: "), so a failed MySQL connection is explained by logging in with pymysql.
    """
    from ml_metadata import metadata_store

    opened = ConnectionConfig()
    opened.CopyFrom(config)
    if read_only and is_sqlite(opened):
        opened.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    if read_only and is_mysql(opened):
        opened.mysql.skip_db_creation = True
    try:
        return metadata_store.MetadataStore(opened)
    except RuntimeError as error:
        if not is_mysql(opened):
            raise
        _connect_mysql(opened).close()
        raise MetadataConnectionError(
            f"{describe_metadata(config)}: ML Metadata cannot open the database "
            f"(does it exist, and may this user use it?): {error}"
        ) from None


def mysql_lock_name(config: ConnectionConfig) -> str:
    """The server-wide named lock of one MySQL store (one database)."""
    name = _LOCK_PREFIX + config.mysql.database
    if len(name) > _MAX_LOCK_NAME:
        digest = hashlib.sha256(config.mysql.database.encode()).hexdigest()
        name = _LOCK_PREFIX + digest[: _MAX_LOCK_NAME - len(_LOCK_PREFIX)]
    return name


def _lock_holder(cursor, name: str) -> str:
    cursor.execute("SELECT IS_USED_LOCK(%s)", (name,))
    (connection_id,) = cursor.fetchone()
    if connection_id is None:
        return "?"
    # Another user's sessions are visible only with the PROCESS privilege.
    cursor.execute(
        "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = %s", (connection_id,)
    )
    row = cursor.fetchone()
    where = f" from {row[0]}" if row else ""
    return f"MySQL connection {connection_id}{where}"


@contextlib.contextmanager
def exclusive_mysql_lock(config: ConnectionConfig) -> Iterator[None]:
    """Hold the store's MySQL named lock (``GET_LOCK``) for the whole run, or raise
    MetadataBusyError at once if another run holds it.

    MySQL does not fail concurrent writers the way SQLite does ("database is
    locked"), but two runs of one pipeline on one store still race: both take the
    same blessed baseline and the same cache decisions. So the rule is the same as
    for SQLite files: one run at a time per store (per database, whichever
    pipelines it holds). The lock belongs to one connection kept open for the run;
    the server releases it when that connection ends, so a run killed with SIGKILL
    frees it as soon as the kernel closes its socket. The connection's
    ``wait_timeout`` is raised so the server does not drop it, and the lock with
    it, while a long Trainer leaves it idle.
    """
    name = mysql_lock_name(config)
    connection = _connect_mysql(config)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION wait_timeout = 31536000")
            cursor.execute("SELECT GET_LOCK(%s, 0)", (name,))
            (acquired,) = cursor.fetchone()
            if acquired != 1:
                holder = _lock_holder(cursor, name)
                raise MetadataBusyError(
                    f"{describe_metadata(config)}: another pipeline run ({holder}) is using this "
                    f"ML Metadata store (MySQL lock {name!r}); wait for it to finish or pass "
                    "another --metadata"
                )
        log.info("holding MySQL lock %r on %s", name, describe_metadata(config))
        yield
    finally:
        # Ending the connection releases the lock; releasing it first also covers a
        # connection that a proxy keeps open. The server may have dropped it already.
        with contextlib.suppress(Exception), connection.cursor() as cursor:
            cursor.execute("DO RELEASE_LOCK(%s)", (name,))
        if connection.open:
            connection.close()


@contextlib.contextmanager
def exclusive_store(config: ConnectionConfig) -> Iterator[None]:
    """One run at a time on ``config``'s store: the flock beside a SQLite file, the
    named lock on a MySQL server; nothing for other kinds (e.g. in-memory)."""
    if is_sqlite(config):
        with exclusive_metadata(Path(config.sqlite.filename_uri)):
            yield
    elif is_mysql(config):
        with exclusive_mysql_lock(config):
            yield
    else:
        yield
