"""One run at a time per ML Metadata store: an exclusive lock file beside the
SQLite file. No TensorFlow or TFX here, so the CLI can import it cheaply.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class MetadataBusyError(RuntimeError):
    """Another run holds the SQLite ML Metadata store."""


@contextlib.contextmanager
def exclusive_metadata(metadata_path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the SQLite metadata file for the whole run.

    Two LocalDagRunner runs on one SQLite file fail with "database is locked" half
    way through; refusing the second at the start is clearer. The lock is an
    flock, so the kernel releases it when its process dies, even by SIGKILL.
    """
    metadata_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = metadata_path.with_name(metadata_path.name + ".lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise MetadataBusyError(
                f"{metadata_path}: another pipeline run (pid {holder}) is using this ML Metadata "
                "store; wait for it to finish or pass another --metadata / --output-root"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
