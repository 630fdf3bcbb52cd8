"""Serving base paths on object stores (``s3://``, ``gs://``) through ``tf.io.gfile``.

Object stores have no directories and no rename: a "directory" is a key prefix, and
a copy is a new object. ``serving/publish.py`` builds its object-store publishing
protocol (staging prefix, verified copy, ``saved_model.pb`` last, a lease instead of
an flock) on the few operations here, and ``serving/versions.py`` reads base paths
with them. Every error of the store comes out as one ``ObjectStoreError`` line that
names the URL and says what is wrong (no bucket, no credentials, access denied,
endpoint unreachable), not as a TensorFlow status dump.

``s3://`` is TensorFlow's S3 filesystem from tensorflow-io (the ``objectstore``
extra), imported the first time an ``s3://`` path is used, so local use never pays
for it. It honours ``S3_ENDPOINT`` (e.g. ``http://127.0.0.1:9000`` for MinIO or
moto), ``S3_VERIFY_SSL``, ``S3_CONNECT_TIMEOUT_MSEC``, ``S3_REQUEST_TIMEOUT_MSEC`` and
the AWS SDK's credentials (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, profiles, instance roles). ``gs://`` is TensorFlow's own GCS
filesystem (tensorflow-io-gcs-filesystem, always installed with TensorFlow); it goes
through the same code, but cannot be pointed at an emulator, so it is untested here.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import socket
import sys
from urllib.parse import urlsplit

SCHEMES = ("s3", "gs")
# Fail in seconds, not after the AWS SDK's defaults (a 1 s connect timeout retried
# with back-off for minutes against a dead endpoint). Set only when the user has not.
_S3_TIMEOUTS = {"S3_CONNECT_TIMEOUT_MSEC": "5000", "S3_REQUEST_TIMEOUT_MSEC": "60000"}
_PROBE_TIMEOUT_S = 5.0


class ObjectStoreError(OSError):
    """An object store refused or could not be reached; the message is one line that
    names the URL."""


def is_url(path: object) -> bool:
    """True for ``scheme://...`` paths, which ``pathlib`` would mangle (``s3:/b``)."""
    return "://" in str(path)


def base_path(text: str | os.PathLike):
    """A base path as given: a ``Path`` for a local one, the ``str`` itself for a URL.
    Use it instead of ``Path(...)`` wherever a base path may be a URL."""
    from pathlib import Path

    return str(text).rstrip("/") if is_url(text) else Path(text)


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def basename(url: str) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[-1]


_loaded: set[str] = set()


def ensure_filesystem(url: str) -> None:
    """Make ``tf.io.gfile`` handle ``url``'s scheme, or raise one clear line.

    ``s3://`` needs tensorflow-io's filesystem plugin, loaded by importing
    ``tensorflow_io``; its request timeouts are shortened first (see ``_S3_TIMEOUTS``)
    and its endpoint probed, so an unreachable store fails at once.
    """
    scheme = urlsplit(str(url)).scheme
    if scheme in _loaded:
        return
    if scheme not in SCHEMES:
        raise ObjectStoreError(
            f"{url}: unsupported URL scheme {scheme}://; expected a local path, s3:// or gs://"
        )
    if scheme == "s3":
        try:
            register_s3()
        except ImportError as error:
            raise ObjectStoreError(
                f"{url}: s3:// needs tensorflow-io, which is not installed ({error}); "
                "install the objectstore extra: pip install -c requirements.lock "
                "'.[objectstore]'"
            ) from None
        _probe_endpoint(url)
        if _no_s3_credentials():
            # The SDK would send unsigned requests and get refusals with no message,
            # after minutes of retries.
            raise ObjectStoreError(
                f"{url}: no AWS credentials: AWS_ACCESS_KEY_ID is unset, there is no profile "
                "or shared credentials file, and the instance metadata service is off "
                "(AWS_EC2_METADATA_DISABLED); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
    _loaded.add(scheme)


def register_s3() -> None:
    """Register TensorFlow's ``s3://`` filesystem in this process: shortened SDK
    timeouts (unless set), tensorflow-io's plugin, the exit guard. No request is sent,
    so it is safe where no store is configured; ``ImportError`` without tensorflow-io.
    ``serving/s3_startup.py`` calls it in every TensorFlow process of the image."""
    for name, value in _S3_TIMEOUTS.items():
        os.environ.setdefault(name, value)
    import tensorflow_io  # noqa: F401 - registers the s3:// filesystem

    _install_exit_guard()


def _probe_endpoint(url: str) -> None:
    """A TCP connect to ``S3_ENDPOINT`` (when set) before any S3 call: the SDK would
    otherwise retry a dead endpoint with back-off before TensorFlow reports it."""
    endpoint = os.environ.get("S3_ENDPOINT")
    if not endpoint:
        return
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    https = parts.scheme == "https" or (
        "://" not in endpoint and os.environ.get("S3_USE_HTTPS", "1") != "0"
    )
    port = parts.port or (443 if https else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=_PROBE_TIMEOUT_S):
            pass
    except OSError as error:
        raise ObjectStoreError(
            f"{url}: the S3 endpoint {endpoint} (S3_ENDPOINT) is unreachable: "
            f"{error.strerror or error}"
        ) from None


def _install_exit_guard() -> None:
    """Skip C++ static destructors at exit, keeping the process's exit status.

    tensorflow-io 0.35 to 0.37.1 (the last release for TF 2.16) aborts at exit after
    any S3 call: "pure virtual method called", status 134, in the static destructors
    of its build (tensorflow/io issues 1912 and 2039, fixed after 0.37.1 was released).
    An atexit handler, run while Python finalizes, registers glibc's ``_exit`` with
    ``on_exit``: glibc calls ``on_exit`` handlers with the status ``exit`` was given,
    most recent first, so once Python has finished (streams flushed) ``exit(status)``
    ends in ``_exit(status)`` before any destructor runs. Where ``on_exit`` is missing
    (not glibc) the handler calls ``os._exit`` at once: 0 unless an exception ended
    the process, since the status is not known to Python then.
    """
    if getattr(_install_exit_guard, "done", False):
        return
    _install_exit_guard.done = True
    failed = {"code": 0}
    original_hook = sys.excepthook

    def hook_recording(kind, value, tb) -> None:
        failed["code"] = 1
        original_hook(kind, value, tb)

    def finish() -> None:
        import ctypes

        try:
            libc = ctypes.CDLL(None)
            libc.on_exit.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            if libc.on_exit(ctypes.cast(libc._exit, ctypes.c_void_p), None) == 0:
                return
        except (AttributeError, OSError):
            pass
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream must not block the exit
                stream.flush()
        os._exit(failed["code"])

    sys.excepthook = hook_recording
    atexit.register(finish)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _no_s3_credentials() -> bool:
    """True when the AWS SDK has nowhere to find credentials: no keys, profile, web
    identity or container credentials in the environment, no shared credentials file,
    and the instance metadata service turned off. (Anonymous access to public buckets
    is therefore not supported; nothing here needs it.)"""
    sources = (
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    )
    if any(os.environ.get(name) for name in sources):
        return False
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser(
        "~/.aws/credentials"
    )
    if os.path.exists(shared):
        return False
    return os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"


def _describe(url: str, error: Exception) -> str:
    """One line for an object store's error, naming the URL and the likely cause."""
    text = " ".join(str(getattr(error, "message", None) or error).split()).strip(" :")
    bucket = urlsplit(str(url)).netloc
    if "NoSuchBucket" in text or "bucket does not exist" in text:
        return f"{url}: bucket {bucket} does not exist ({text})"
    if any(
        key in text
        for key in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "No credentials",
            "credentials",
            "InvalidClientTokenId",
            "ExpiredToken",
        )
    ):
        return (
            f"{url}: the store refused the credentials: set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (or a profile or role) that can use bucket {bucket} ({text})"
        )
    if "AccessDenied" in text or "Access Denied" in text or "403" in text:
        return f"{url}: access denied: the credentials may not read or write here ({text})"
    if "curl" in text.lower() or "connect" in text.lower() or "timeout" in text.lower():
        return f"{url}: the object store cannot be reached ({text})"
    return f"{url}: {text}"


def _call(url: str, fn, *args):
    if is_url(url):
        ensure_filesystem(url)
    try:
        return fn(*args)
    except ObjectStoreError:
        raise
    except Exception as error:
        import tensorflow as tf

        if isinstance(error, tf.errors.NotFoundError) and "NoSuchBucket" not in str(error):
            raise FileNotFoundError(f"{url}: not found") from None
        if isinstance(error, (tf.errors.OpError, OSError)):
            raise ObjectStoreError(_describe(url, error)) from None
        raise


def exists(url: str) -> bool:
    return bool(_call(url, lambda: _gfile().exists(url)))


def listdir(url: str) -> list[str]:
    """Names directly under the prefix ``url`` (no trailing slashes); [] when the prefix
    holds nothing (an object store has no empty directories)."""
    try:
        names = _call(url, lambda: _gfile().listdir(url))
    except FileNotFoundError:
        return []
    return sorted({name.rstrip("/") for name in names if name.rstrip("/")})


def files_under(url: str) -> list[str]:
    """Every object under the prefix ``url``, as paths relative to it, sorted."""
    found = []
    try:
        walked = _call(url, lambda: list(_gfile().walk(url)))
    except FileNotFoundError:
        return []
    root = str(url).rstrip("/")
    for dirpath, _, filenames in walked:
        rel_dir = dirpath.rstrip("/")[len(root) :].strip("/")
        found.extend(f"{rel_dir}/{name}" if rel_dir else name for name in filenames)
    return sorted(found)


def mtime(url: str) -> float:
    """An object's last-modified time, seconds since the epoch."""
    return _call(url, lambda: _gfile().stat(url).mtime_nsec) / 1e9


def read_bytes(url: str) -> bytes:
    def read() -> bytes:
        with _gfile().GFile(url, "rb") as f:
            return f.read()

    return _call(url, read)


def write_bytes(url: str, data: bytes) -> None:
    def write() -> None:
        with _gfile().GFile(url, "wb") as f:
            f.write(data)

    _call(url, write)


def copy(source: str, destination: str) -> None:
    """One object (or local file) to ``destination``, overwriting it."""
    for path in (source, destination):
        if is_url(path):
            ensure_filesystem(str(path))
    _call(destination, lambda: _gfile().copy(str(source), destination, overwrite=True))


def remove(url: str) -> None:
    """Delete one object; a missing one is not an error."""
    with contextlib.suppress(FileNotFoundError):
        _call(url, lambda: _gfile().remove(url))


def rmtree(url: str) -> None:
    """Delete every object under the prefix ``url`` (one by one: S3 has no tree delete)."""
    for rel in files_under(url):
        remove(join(url, rel))


def digest(url: str) -> tuple[int, str]:
    """(size, sha256) of one object or local file, read back in full."""
    sha = hashlib.sha256()
    size = 0
    if is_url(url):
        data = read_bytes(url)
        sha.update(data)
        size = len(data)
    else:
        with open(url, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
                size += len(chunk)
    return size, sha.hexdigest()
