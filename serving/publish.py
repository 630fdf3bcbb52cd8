"""Publishing a SavedModel into a TF Serving base path, atomically.

TF Serving treats every integer-named subdirectory of a model's base path as a
version and loads it as soon as it appears, without checking that it is
complete. So a version is written and fsynced under a hidden, non-numeric name
in the same directory and then renamed to its integer name: an integer
directory is always complete. Versions only grow. Plain functions over a local
filesystem; the TFX executor that calls them is ``components/pusher/executor.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

TEMP_PREFIX = ".incoming-"
# One JSON line per rollback: which new version re-published which old one.
ROLLBACK_LOG = ".rollbacks.jsonl"


def list_versions(base_dir: str | os.PathLike) -> list[int]:
    """Integer versions present under ``base_dir``, ascending. Names of ASCII digits only:
    ``str.isdigit`` is also true of ``²``, which ``int`` refuses."""
    base = Path(base_dir)
    if not base.is_dir():
        return []
    return sorted(
        int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()
    )


def next_version(base_dir: str | os.PathLike, now: float | None = None) -> int:
    """A Unix-timestamp version (TFX's convention), bumped past any existing one."""
    stamp = int(time.time() if now is None else now)
    existing = list_versions(base_dir)
    return max(stamp, existing[-1] + 1) if existing else stamp


def remove_stale_temporaries(base_dir: str | os.PathLike) -> list[str]:
    """Delete half-written versions left by a killed push; returns their names."""
    base = Path(base_dir)
    removed = []
    if base.is_dir():
        for entry in base.iterdir():
            if entry.name.startswith(TEMP_PREFIX):
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
    newest = Path(base_dir) / str(versions[-1])
    if tree_digest(newest) == tree_digest(model_dir):
        return versions[-1], str(newest)
    return None


def publish_saved_model(
    model_dir: str | os.PathLike,
    base_dir: str | os.PathLike,
    now: float | None = None,
    verify: Callable[[str], object] | None = None,
) -> tuple[int, str]:
    """Copy the SavedModel in ``model_dir`` to ``base_dir/<next version>`` atomically.

    ``verify``, when given, is called on the staged copy after it is written and
    synced and before the rename; if it raises, the staged copy is deleted and the
    error propagates, so no version appears. Returns (version, path). Raises
    FileNotFoundError when ``model_dir`` holds no ``saved_model.pb``, before
    anything is written.
    """
    source = Path(model_dir)
    if not (source / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{source}: no saved_model.pb, not a SavedModel; nothing pushed")
    if "://" in str(base_dir):
        raise NotImplementedError(
            f"{base_dir}: atomic publishing needs a local or mounted filesystem (rename)"
        )
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    for name in remove_stale_temporaries(base):
        logging.warning("removed half-written version %s left by an earlier push", name)
    version = next_version(base, now)
    staging = base / f"{TEMP_PREFIX}{version}-{os.getpid()}"
    shutil.copytree(source, staging)
    _fsync_tree(staging)
    if verify is not None:
        try:
            verify(str(staging))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    final = base / str(version)
    os.rename(staging, final)
    _fsync_dir(base)
    logging.info("published %s as version %d at %s", source, version, final)
    return version, str(final)


def prune_versions(base_dir: str | os.PathLike, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` versions; returns the deleted ones.

    Called only after a new version is in place, so a failed push never leaves
    fewer than ``keep`` complete versions. Each old version is first renamed to a
    hidden name, so TF Serving sees it disappear at once rather than half-deleted.
    """
    if keep < 1:
        raise ValueError(f"keep_versions: expected >= 1, got {keep}")
    base = Path(base_dir)
    doomed = list_versions(base)[:-keep]
    for version in doomed:
        hidden = base / f"{TEMP_PREFIX}deleting-{version}"
        os.rename(base / str(version), hidden)
        shutil.rmtree(hidden)
        logging.info("deleted old version %d (keeping the newest %d)", version, keep)
    return doomed


def rollback(
    base_dir: str | os.PathLike,
    to: int | None = None,
    verify: Callable[[str], object] | None = None,
    now: float | None = None,
) -> tuple[int, int]:
    """Make an earlier version current again by publishing a copy of it as a new,
    higher version (history is never rewritten: versions only grow, and TF
    Serving's default "latest" policy picks the new one up at its next poll).

    ``to`` is the version to restore; by default the one before the current
    (newest) version. The copy is published like any push (staged, synced,
    verified, renamed) and recorded in ``ROLLBACK_LOG``. Returns (new version,
    restored version). Raises ValueError naming the versions present when there
    is nothing to roll back to.
    """
    base = Path(base_dir)
    versions = list_versions(base)
    if not versions:
        raise ValueError(f"{base}: no versions to roll back")
    current = versions[-1]
    if to is None:
        if len(versions) < 2:
            raise ValueError(
                f"{base}: only version {current} exists; nothing earlier to roll back to"
            )
        to = versions[-2]
    if to not in versions:
        raise ValueError(f"{base}: no version {to}; versions present: {versions}")
    if to == current:
        raise ValueError(f"{base}: version {to} is already the current (newest) version")
    version, _ = publish_saved_model(base / str(to), base, now=now, verify=verify)
    record = {
        "version": version,
        "restores": to,
        "replaced": current,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with open(base / ROLLBACK_LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
        log.flush()
        os.fsync(log.fileno())
    logging.info("rolled back: version %d restores version %d (was %d)", version, to, current)
    return version, to


def rollback_sources(base_dir: str | os.PathLike) -> dict[int, int]:
    """new version -> the version it restores, from ``ROLLBACK_LOG``."""
    path = Path(base_dir) / ROLLBACK_LOG
    if not path.is_file():
        return {}
    sources: dict[int, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            sources[int(record["version"])] = int(record["restores"])
    return sources
