"""Publishing a SavedModel into a TF Serving base path, atomically.

TF Serving treats every integer-named subdirectory of a model's base path as a
version and loads it as soon as it appears, without checking that it is
complete. So a version is written and fsynced under a hidden, non-numeric name
in the same directory and then renamed to its integer name: an integer
directory is always complete. Versions only grow. Plain functions over a local
filesystem; the TFX executor that calls them is ``components/pusher/executor.py``.

Everything that changes a base path (a push, pruning, a rollback) holds one
exclusive lock per base path, an flock on ``BASE/.publish.lock`` (``publish_lock``):
two pushes at once get two distinct complete versions, a rollback never races a
push, and a push never deletes another's staged copy. A second holder waits for the
first (``DEFAULT_LOCK_TIMEOUT_S``) rather than failing at once.

A base path may also be an ``s3://`` or ``gs://`` URL (``serving/object_store.py``).
Object stores have no rename and no flock, so there the same promises are kept by a
different protocol (docs/serving.md, "Object-store base paths"): the version is staged
under ``BASE/.incoming-<v>-<pid>.<host>/``, read back and verified, then copied into
``BASE/<v>/`` with ``saved_model.pb`` last; a version counts only once its
``saved_model.pb`` exists; pruning deletes ``saved_model.pb`` first; the lock is a
lease object (``_ObjectStoreLease``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from ingest.errors import UsageError
from serving import object_store
from serving.object_store import is_url

TEMP_PREFIX = ".incoming-"
# One JSON line per rollback: which new version re-published which old one.
ROLLBACK_LOG = ".rollbacks.jsonl"
# Hidden (TF Serving loads integer names only) and not an .incoming-* entry.
LOCK_NAME = ".publish.lock"
# A push copies, syncs and verifies (loads) a SavedModel under the lock: seconds to a
# minute or two. Ten minutes of waiting means the holder is stuck, not slow.
DEFAULT_LOCK_TIMEOUT_S = 600.0
# A staged or half-deleted entry: .incoming-<what>-<pid>@<host>. The owner is how a
# later push decides whether it may delete the entry (remove_stale_temporaries).
_OWNED_TEMP = re.compile(r"\.incoming-(?P<what>.+)-(?P<pid>[0-9]+)@(?P<host>[^/@]+)")


class PublishLockTimeoutError(TimeoutError):
    """Another process kept a base path's publish lock longer than we would wait."""


def _hostname() -> str:
    return socket.gethostname() or "localhost"


def _owned_temp_name(what: str) -> str:
    """The name of a temporary entry this process owns: .incoming-<what>-<pid>@<host>."""
    return f"{TEMP_PREFIX}{what}-{os.getpid()}@{_hostname()}"


# Locks this process holds: resolved base path -> [pid, depth]. flock locks belong to
# an open file, so a second open() and flock() in the holding thread would wait for
# itself (rollback calls publish_saved_model); a nested acquisition in the same thread
# only counts depth. Per thread, so another thread of this process waits like another
# process does; the pid guards against a child forked while the lock was held.
_held = threading.local()


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown (the holder had not yet recorded itself)"


@contextlib.contextmanager
def publish_lock(
    base_dir: str | os.PathLike, timeout: float = DEFAULT_LOCK_TIMEOUT_S
) -> Iterator[None]:
    """Hold ``base_dir``'s exclusive publish lock (creating the directory if it is
    missing); reentrant within one thread.

    Waits up to ``timeout`` seconds for another holder, then raises
    PublishLockTimeoutError naming the base path and the holder's pid and host (which
    the holder writes into the lock file). An flock is released by the kernel when
    its process dies, even by SIGKILL, so a crashed push never wedges the base path.

    The holder deletes the lock file before releasing it, so an idle base path holds
    no lock file (only a holder killed by a signal leaves one, reused by the next). A
    waiter may meanwhile have opened the deleted file; after taking the lock it checks
    that the path still names the file it locked and starts over if not (the usual
    unlink-before-unlock protocol), so two holders never coexist.
    """
    if is_url(base_dir):
        object_store.ensure_filesystem(str(base_dir))
        with _ObjectStoreLease.hold(str(base_dir).rstrip("/"), timeout):
            yield
        return
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    key = str(base.resolve())
    held = getattr(_held, "locks", None)
    if held is None:
        held = _held.locks = {}
    entry = held.get(key)
    if entry is not None and entry[0] == os.getpid():
        entry[1] += 1
        try:
            yield
        finally:
            entry[1] -= 1
        return
    lock_path = base / LOCK_NAME
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise PublishLockTimeoutError(
                    f"{base}: another publish holds {lock_path} ({_holder(lock_path)}); "
                    f"waited {timeout:g} s. If no push, prune or rollback is running there, "
                    "the holder is stuck: stop it and retry"
                ) from None
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            continue
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its holder had already deleted: start over
    try:
        os.ftruncate(fd, 0)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on host {_hostname()} since {stamp}\n".encode(), 0)
        held[key] = [os.getpid(), 1]
        try:
            yield
        finally:
            del held[key]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
    finally:
        os.close(fd)


def list_versions(base_dir: str | os.PathLike) -> list[int]:
    """Integer versions present under ``base_dir``, ascending. Names of ASCII digits only:
    ``str.isdigit`` is also true of ``²``, which ``int`` refuses."""
    if is_url(base_dir):
        return sorted(v for v, complete in _url_integer_prefixes(str(base_dir)).items() if complete)
    base = Path(base_dir)
    if not base.is_dir():
        return []
    return sorted(
        int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()
    )


def version_mtime(path: str | os.PathLike) -> float:
    """When the version at ``path`` was written (seconds since the epoch): its
    directory's mtime; on an object store, which has no directories, the time of its
    ``saved_model.pb``, the object the publisher writes last."""
    if is_url(path):
        return object_store.mtime(object_store.join(str(path), "saved_model.pb"))
    return os.path.getmtime(path)


def _is_version_name(name: str) -> bool:
    return name.isascii() and name.isdigit()


def _url_integer_prefixes(base: str) -> dict[int, bool]:
    """Every integer-named prefix under the URL ``base`` -> whether it is a complete
    version: its ``saved_model.pb`` exists, which the publisher writes last and the
    pruner deletes first. (An object store has no directory to appear atomically.)"""
    return {
        int(name): object_store.exists(object_store.join(base, name, "saved_model.pb"))
        for name in object_store.listdir(base)
        if _is_version_name(name)
    }


def next_version(base_dir: str | os.PathLike, now: float | None = None) -> int:
    """A Unix-timestamp version (TFX's convention), bumped past any existing one."""
    stamp = int(time.time() if now is None else now)
    # On an object store, past incomplete prefixes too: never copy into leftovers.
    if is_url(base_dir):
        existing = sorted(_url_integer_prefixes(str(base_dir)))
    else:
        existing = list_versions(base_dir)
    return max(stamp, existing[-1] + 1) if existing else stamp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to another user
        return True
    return True


def remove_stale_temporaries(base_dir: str | os.PathLike) -> list[str]:
    """Delete half-written or half-deleted versions whose owner is gone; returns
    their names. Call it holding ``publish_lock`` (publish_saved_model does).

    Why that is safe: an ``.incoming-<what>-<pid>@<host>`` entry is made only by a
    process holding the lock, which renames or deletes it before releasing the lock.
    So while we hold the lock, such an entry is left by a process that died mid-push,
    and deleting it races nobody. Its pid is still checked, on this host, with
    ``os.kill(pid, 0)``: a live owner means a writer that took no lock (an older
    version of this code, or a filesystem whose flock is not shared between the
    writers), whose copy we must not pull away; a dead pid reused by an unrelated
    process only keeps a stale entry, never deletes a live one. Entries of another
    host, and names with no owner (from before owners were recorded), cannot be
    checked from here: they are left alone and logged. On an object store see
    ``_remove_object_store_leftovers``.
    """
    if is_url(base_dir):
        return _remove_object_store_leftovers(str(base_dir).rstrip("/"))
    base = Path(base_dir)
    removed = []
    if not base.is_dir():
        return removed
    host = _hostname()
    for entry in sorted(base.iterdir()):
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        owner = _OWNED_TEMP.fullmatch(entry.name)
        if owner is None:
            logging.warning(
                "left %s alone: its name records no owner (pid@host); delete it by hand "
                "if no push is running",
                entry,
            )
            continue
        pid = int(owner["pid"])
        if owner["host"] != host:
            logging.warning(
                "left %s alone: its owner, pid %d, ran on host %s, not this host (%s)",
                entry,
                pid,
                owner["host"],
                host,
            )
            continue
        if _pid_alive(pid):
            logging.warning("left %s alone: its owner, pid %d, is still running", entry, pid)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tree_digest(root: str | os.PathLike) -> str:
    """sha256 over every file's relative path and bytes under ``root``."""
    if is_url(root):
        digest = hashlib.sha256()
        for rel in object_store.files_under(str(root)):
            digest.update(rel.encode())
            digest.update(b"\0")
            digest.update(object_store.read_bytes(object_store.join(str(root), rel)))
        return digest.hexdigest()
    digest = hashlib.sha256()
    base = Path(root)
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(base)).encode())
        digest.update(b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def current_version_if_same(
    model_dir: str | os.PathLike, base_dir: str | os.PathLike
) -> tuple[int, str] | None:
    """(version, path) of the newest version when it holds exactly ``model_dir``'s files.

    A re-run that blesses the model already being served (the Evaluator re-runs
    once it has that model as its own baseline) must not publish a copy of it.
    """
    versions = list_versions(base_dir)
    if not versions:
        return None
    newest = _child(base_dir, str(versions[-1]))
    if tree_digest(newest) == tree_digest(model_dir):
        return versions[-1], str(newest)
    return None


def publish_saved_model(
    model_dir: str | os.PathLike,
    base_dir: str | os.PathLike,
    now: float | None = None,
    verify: Callable[[str], object] | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> tuple[int, str]:
    """Copy the SavedModel in ``model_dir`` to ``base_dir/<next version>`` atomically.

    ``verify``, when given, is called on the staged copy after it is written and
    synced and before the rename; if it raises, the staged copy is deleted and the
    error propagates, so no version appears. Returns (version, path). Raises
    FileNotFoundError when ``model_dir`` holds no ``saved_model.pb``, before
    anything is written. Holds ``publish_lock`` from choosing the version to the
    rename, so concurrent pushes get distinct versions, one after the other;
    PublishLockTimeoutError after ``lock_timeout`` seconds of waiting for another.
    """
    if is_url(base_dir) or is_url(model_dir):
        if not _source_has_saved_model(model_dir):
            raise FileNotFoundError(
                f"{model_dir}: no saved_model.pb, not a SavedModel; nothing pushed"
            )
        if not is_url(base_dir):
            # A model on an object store (a cluster's pipeline root) pushed to a local
            # or mounted base path: fetch it, then publish it as any local model.
            with tempfile.TemporaryDirectory(prefix="mnist-tfx-push-") as tmp:
                local = Path(tmp) / "model"
                for rel in object_store.files_under(str(model_dir)):
                    (local / rel).parent.mkdir(parents=True, exist_ok=True)
                    object_store.copy(object_store.join(str(model_dir), rel), str(local / rel))
                return publish_saved_model(local, base_dir, now, verify, lock_timeout)
        return _publish_to_object_store(
            str(model_dir), str(base_dir).rstrip("/"), now, verify, lock_timeout
        )
    source = Path(model_dir)
    if not (source / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{source}: no saved_model.pb, not a SavedModel; nothing pushed")
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    with publish_lock(base, lock_timeout):
        for name in remove_stale_temporaries(base):
            logging.warning("removed %s, left by an earlier push whose process died", name)
        version = next_version(base, now)
        staging = base / _owned_temp_name(str(version))
        try:
            shutil.copytree(source, staging)
            _fsync_tree(staging)
            if verify is not None:
                verify(str(staging))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        final = base / str(version)
        os.rename(staging, final)
        _fsync_dir(base)
    logging.info("published %s as version %d at %s", source, version, final)
    return version, str(final)


# --- Object-store base paths (s3://, gs://): no rename, no flock. ---------------------
# How long a lease on BASE/.publish.lock lasts without renewal; the holder renews it
# every LEASE_S / 4 while it works, so only a dead holder's lease runs out.
LEASE_S = 60.0


# Staged or being-deleted entries on an object store: .incoming-[deleting-]<v>-<pid>.<host>.
# No "@" (moto's S3 signature check rejects keys holding it, and some S3 gateways
# mishandle it); the owner is only informative: the lease decides (see below).
_URL_TEMP = re.compile(r"\.incoming-(?P<what>(?:deleting-)?[0-9]+)-.+")


def _url_temp_name(what: str) -> str:
    return f"{TEMP_PREFIX}{what}-{os.getpid()}.{_hostname()}"


def _child(base: str | os.PathLike, name: str) -> str | Path:
    return object_store.join(str(base), name) if is_url(base) else Path(base) / name


def _source_has_saved_model(model_dir: str | os.PathLike) -> bool:
    if is_url(model_dir):
        return object_store.exists(object_store.join(str(model_dir), "saved_model.pb"))
    return (Path(model_dir) / "saved_model.pb").is_file()


class _ObjectStoreLease:
    """The publish lock of an object-store base path: the object ``BASE/.publish.lock``
    holding ``{"owner", "token", "expires"}``.

    Taken by writing it only when it is absent and reading it back: the holder is
    whoever's token is read back after a short settle. An expired lease (its holder
    died, or stopped renewing) is deleted and taken over. The holder renews it from a
    background thread every ``LEASE_S / 4`` seconds and deletes it when done.

    Best effort, and said so in docs/serving.md: ``tf.io.gfile`` offers S3 no
    conditional write (compare-and-swap), so two writers that both find the object
    absent within the settle time can both read back their own token if the store
    serves them different versions; and a holder paused longer than its lease (a
    stopped VM) can lose it unknowingly. One pipeline per base path is the supported use.
    """

    _held: dict[str, list] = {}  # base -> [pid, thread id, depth]
    _guard = threading.Lock()
    SETTLE_S = 0.5

    @classmethod
    @contextlib.contextmanager
    def hold(cls, base: str, timeout: float) -> Iterator[None]:
        me = [os.getpid(), threading.get_ident()]
        with cls._guard:
            entry = cls._held.get(base)
            nested = entry is not None and entry[:2] == me
            if nested:
                entry[2] += 1
        if nested:
            try:
                yield
            finally:
                entry[2] -= 1
            return
        lease = cls(base)
        lease.acquire(timeout)
        cls._held[base] = [*me, 1]
        try:
            yield
        finally:
            del cls._held[base]
            lease.release()

    def __init__(self, base: str) -> None:
        self.base = base
        self.url = object_store.join(base, LOCK_NAME)
        self.token = uuid.uuid4().hex
        self.owner = f"pid {os.getpid()} on host {_hostname()}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False

    def _record(self) -> bytes:
        return json.dumps(
            {"owner": self.owner, "token": self.token, "expires": time.time() + LEASE_S}
        ).encode()

    def _read(self) -> dict | None:
        try:
            return json.loads(object_store.read_bytes(self.url))
        except FileNotFoundError:
            return None
        except ValueError:  # a torn or foreign object: treat as held until it expires
            return {"owner": "unknown (unreadable lease)", "token": "", "expires": 0.0}

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            current = self._read()
            if current is None:
                object_store.write_bytes(self.url, self._record())
                time.sleep(self.SETTLE_S)
                current = self._read()
                if current is not None and current.get("token") == self.token:
                    break
            elif float(current.get("expires", 0)) < time.time():
                logging.warning(
                    "%s: taking over the expired publish lease of %s",
                    self.base,
                    current.get("owner"),
                )
                object_store.remove(self.url)
                continue
            if time.monotonic() >= deadline:
                holder = (current or {}).get("owner", "unknown")
                raise PublishLockTimeoutError(
                    f"{self.base}: another publish holds the lease {self.url} ({holder}); "
                    f"waited {timeout:g} s. If no push, prune or rollback is running there, "
                    f"it expires within {LEASE_S:g} s of its holder's death"
                )
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        self._renewer = threading.Thread(target=self._renew, name="publish-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 4):
            try:
                current = self._read()
                if current is None or current.get("token") != self.token:
                    self.lost = True
                    logging.error("%s: lost the publish lease to %s", self.base, current)
                    return
                object_store.write_bytes(self.url, self._record())
            except OSError as error:  # keep trying: the lease is still ours until it expires
                logging.warning("%s: could not renew the publish lease: %s", self.base, error)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=30)
        current = self._read()
        if current is not None and current.get("token") == self.token:
            object_store.remove(self.url)


def _remove_object_store_leftovers(base: str) -> list[str]:
    """Delete what a dead push or prune left under the URL ``base``; call holding the
    lease. Returns the names removed.

    ``.incoming-<v>-<pid>.<host>/`` is a staged copy, and ``.incoming-deleting-<v>-...``
    the marker of a version being pruned. Only the lease holder writes them and it
    deletes them before it lets the lease go, so while we hold the lease every such
    entry is a dead process's. Unlike on a filesystem its pid cannot be checked (the
    writer may have run in another pod): the lease is the whole argument. With each
    goes the integer prefix ``<v>/`` it names, when that holds no ``saved_model.pb``
    (a copy that died before its last file, or a prune that died after its first);
    a ``<v>/`` with its ``saved_model.pb`` is a complete version and stays.
    """
    removed = []
    for name in object_store.listdir(base):
        if not name.startswith(TEMP_PREFIX):
            continue
        owned = _URL_TEMP.fullmatch(name)
        what = owned["what"] if owned else ""
        version = what.removeprefix("deleting-")
        if _is_version_name(version):
            prefix = object_store.join(base, version)
            complete = object_store.exists(object_store.join(prefix, "saved_model.pb"))
            if not complete and object_store.files_under(prefix):
                object_store.rmtree(prefix)
                removed.append(version)
        entry = object_store.join(base, name)
        object_store.rmtree(entry)
        object_store.remove(entry)
        removed.append(name)
    return removed


def _files_with_saved_model_last(root: str | os.PathLike) -> list[str]:
    if is_url(root):
        files = object_store.files_under(str(root))
    else:
        base = Path(root)
        files = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
    return sorted(files, key=lambda rel: rel == "saved_model.pb")


def _publish_to_object_store(
    model_dir: str,
    base: str,
    now: float | None,
    verify: Callable[[str], object] | None,
    lock_timeout: float,
) -> tuple[int, str]:
    """publish_saved_model for a URL base path: stage, read back, verify, copy with
    ``saved_model.pb`` last, delete the staged copy (docs/serving.md)."""
    with publish_lock(base, lock_timeout):
        for name in _remove_object_store_leftovers(base):
            logging.warning("removed %s/%s, left by an earlier push that died", base, name)
        version = next_version(base, now)
        staging = object_store.join(base, _url_temp_name(str(version)))
        final = object_store.join(base, str(version))
        files = _files_with_saved_model_last(model_dir)
        try:
            expected = {}
            for rel in files:
                source = _child(model_dir, rel)
                expected[rel] = object_store.digest(str(source))
                object_store.copy(str(source), object_store.join(staging, rel))
            for rel in files:
                got = object_store.digest(object_store.join(staging, rel))
                if got != expected[rel]:
                    raise object_store.ObjectStoreError(
                        f"{staging}/{rel}: read back {got[0]} bytes, sha256 {got[1][:12]}..., "
                        f"expected {expected[rel][0]} bytes, sha256 {expected[rel][1][:12]}..."
                    )
            if verify is not None:
                verify(staging)
            for rel in files:  # saved_model.pb last: only then is <v>/ a version
                object_store.copy(object_store.join(staging, rel), object_store.join(final, rel))
        except BaseException:
            # saved_model.pb is written last: if we got here it is not in final/, so
            # final/ was never a version; delete it, then the staged copy.
            with contextlib.suppress(Exception):
                if not object_store.exists(object_store.join(final, "saved_model.pb")):
                    object_store.rmtree(final)
                object_store.rmtree(staging)
            raise
        object_store.rmtree(staging)
    logging.info("published %s as version %d at %s", model_dir, version, final)
    return version, final


def _read_models_config(path: Path) -> tuple:
    """The server's ModelConfigs of ``path``; its errors name ``--models-config``."""
    from serving.server import model_configs_from_file

    try:
        return model_configs_from_file(path)
    except ValueError as error:
        raise UsageError(
            str(error).replace(f"--model-config-file {path}", f"--models-config {path}", 1)
        ) from None


def labelled_versions(
    models_config: str | os.PathLike, base_dir: str | os.PathLike
) -> dict[str, int]:
    """label -> version of the ``models.config`` entry that serves ``base_dir``.

    ``models_config`` is a TF Serving ModelServerConfig text proto, read by the
    server's own parser (``serving/server.py``). The entry whose base_path is
    ``base_dir`` counts; failing that (the file usually names container paths such as
    /models/mnist), the entry whose name is ``base_dir``'s last component, the model
    name this project pushes under. Other models' labels do not count. ValueError
    naming the file when it cannot be read or parsed.
    """
    path = Path(models_config)
    models = _read_models_config(path)
    if is_url(base_dir):
        base_name = object_store.basename(str(base_dir))
        here = str(base_dir).rstrip("/")
        matches = [m for m in models if str(m.base_path).rstrip("/") == here]
    else:
        base = Path(base_dir)
        base_name = base.name
        matches = [m for m in models if Path(m.base_path).resolve() == base.resolve()]
    matches = matches or [m for m in models if m.name == base_name]
    if not matches:
        logging.warning(
            "%s names no model with base_path %s or name %s: none of its labels protects "
            "a version there",
            path,
            base_dir,
            base_name,
        )
    labels: dict[str, int] = {}
    for model in matches:
        labels.update(model.labels)
    return labels


def prune_versions(
    base_dir: str | os.PathLike,
    keep: int,
    models_config: str | os.PathLike | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> list[int]:
    """Delete all but the newest ``keep`` versions; returns the deleted ones.

    Never deleted: the newest version (the one TF Serving's default policy serves;
    ``keep`` >= 1) and any version a label names in ``models_config`` (see
    ``labelled_versions``), since TF Serving refuses a label whose version is gone.
    Labelled versions do not count towards ``keep``.

    Called only after a new version is in place, so a failed push never leaves
    fewer than ``keep`` complete versions. Each old version is first renamed to a
    hidden name, so TF Serving sees it disappear at once rather than half-deleted.
    Holds ``publish_lock`` throughout.
    """
    if keep < 1:
        raise ValueError(f"keep_versions: expected >= 1, got {keep}")
    labels = labelled_versions(models_config, base_dir) if models_config is not None else {}
    if is_url(base_dir):
        base: Path | str = str(base_dir).rstrip("/")
        delete = _delete_url_version
    else:
        base = Path(base_dir)
        if not base.is_dir():
            return []
        delete = _delete_local_version
    deleted = []
    with publish_lock(base, lock_timeout):
        versions = list_versions(base)
        protected = set(versions[-keep:]) | set(labels.values())
        for version in versions:
            if version in protected:
                continue
            delete(base, version)
            deleted.append(version)
            logging.info("deleted old version %d (keeping the newest %d)", version, keep)
        for label, version in sorted(labels.items()):
            if version in versions and version not in versions[-keep:]:
                logging.info(
                    "kept version %d: label %r names it in %s", version, label, models_config
                )
    return deleted


def _delete_local_version(base: Path, version: int) -> None:
    """Renamed to a hidden name first, so TF Serving sees the version disappear at once
    rather than half-deleted."""
    hidden = base / _owned_temp_name(f"deleting-{version}")
    os.rename(base / str(version), hidden)
    shutil.rmtree(hidden)


def _delete_url_version(base: str, version: int) -> None:
    """No rename to hide a version at once on an object store, so it goes in the
    reverse order of its publishing: a marker ``.incoming-deleting-<v>-<pid>.<host>``
    (so a later push finishes a prune that died), then ``saved_model.pb`` (from then on
    no reader counts ``<v>/`` as a version, and TF Serving unloads it), then the rest,
    then the marker."""
    marker = object_store.join(base, _url_temp_name(f"deleting-{version}"))
    prefix = object_store.join(base, str(version))
    object_store.write_bytes(marker, b"")
    object_store.remove(object_store.join(prefix, "saved_model.pb"))
    object_store.rmtree(prefix)
    object_store.remove(marker)


def rollback(
    base_dir: str | os.PathLike,
    to: int | None = None,
    verify: Callable[[str], object] | None = None,
    now: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> tuple[int, int]:
    """Make an earlier version current again by publishing a copy of it as a new,
    higher version (history is never rewritten: versions only grow, and TF
    Serving's default "latest" policy picks the new one up at its next poll).

    ``to`` is the version to restore; by default the one before the current
    (newest) version. The copy is published like any push (staged, synced,
    verified, renamed) and recorded in ``ROLLBACK_LOG``. Returns (new version,
    restored version). Raises ValueError naming the versions present when there
    is nothing to roll back to. Holds ``publish_lock`` for the whole operation, so
    the "current" version it replaces is still current when its copy appears and a
    concurrent push cannot delete or overtake the version being restored midway.
    """
    base = str(base_dir).rstrip("/") if is_url(base_dir) else Path(base_dir)
    if not list_versions(base):
        raise UsageError(f"{base}: no versions to roll back")
    with publish_lock(base, lock_timeout):
        versions = list_versions(base)
        current = versions[-1]
        if to is None:
            if len(versions) < 2:
                raise UsageError(
                    f"{base}: only version {current} exists; nothing earlier to roll back to"
                )
            to = versions[-2]
        if to not in versions:
            raise UsageError(f"{base}: no version {to}; versions present: {versions}")
        if to == current:
            raise UsageError(f"{base}: version {to} is already the current (newest) version")
        version, _ = publish_saved_model(_child(base, str(to)), base, now=now, verify=verify)
        record = {
            "version": version,
            "restores": to,
            "replaced": current,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if is_url(base):  # no append on an object store: rewrite it, under the lock
            log_url = object_store.join(base, ROLLBACK_LOG)
            try:
                before = object_store.read_bytes(log_url)
            except FileNotFoundError:
                before = b""
            object_store.write_bytes(log_url, before + (json.dumps(record) + "\n").encode())
            logging.info(
                "rolled back: version %d restores version %d (was %d)", version, to, current
            )
            return version, to
        with open(base / ROLLBACK_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())
    logging.info("rolled back: version %d restores version %d (was %d)", version, to, current)
    return version, to


def rollback_sources(base_dir: str | os.PathLike) -> dict[int, int]:
    """new version -> the version it restores, from ``ROLLBACK_LOG``."""
    if is_url(base_dir):
        try:
            text = object_store.read_bytes(object_store.join(str(base_dir), ROLLBACK_LOG))
        except FileNotFoundError:
            return {}
        text = text.decode("utf-8")
    else:
        path = Path(base_dir) / ROLLBACK_LOG
        if not path.is_file():
            return {}
        text = path.read_text(encoding="utf-8")
    sources: dict[int, int] = {}
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            sources[int(record["version"])] = int(record["restores"])
    return sources


def check_models_config(models_config: str | os.PathLike) -> None:
    """ValueError naming ``--models-config`` and the file when it is not a TF Serving
    models.config the server would accept; run before anything is trained or pushed."""
    _read_models_config(Path(models_config))
