"""One run at a time per ML Metadata store (``pipeline/metadata_lock.py``): a
second holder is refused with a message naming the store and the first holder's
pid, and a killed holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.errors import EXIT_BUSY
from cli.main import main
from pipeline.metadata_lock import MetadataBusyError, exclusive_metadata

HOLD_LOCK = """
import sys, time
from pathlib import Path
from pipeline.metadata_lock import exclusive_metadata
with exclusive_metadata(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/out/mnist_cnn/metadata.sqlite."""
    metadata = tmp_path / "out" / "mnist_cnn" / "metadata.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(metadata)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    yield proc, metadata
    proc.kill()
    proc.wait()


def test_second_holder_is_refused_with_the_first_holders_pid(holder):
    proc, metadata = holder
    with pytest.raises(MetadataBusyError) as error, exclusive_metadata(metadata):
        pass
    assert str(metadata) in str(error.value)
    assert f"pid {proc.pid}" in str(error.value)


def test_cli_run_refuses_before_the_pipeline_starts(holder, tmp_path, capsys):
    _, metadata = holder
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "mnist"
    args = ["run", "--output-root", str(tmp_path / "out"), "--data-dir", str(tmp_path / "d")]
    code = main([*args, "--source", str(fixture)])
    assert code == EXIT_BUSY
    assert "another pipeline run" in capsys.readouterr().err
    # The data was checked and converted; no pipeline state was written.
    assert sorted(p.name for p in metadata.parent.iterdir()) == ["metadata.sqlite.lock"]


def test_lock_of_a_killed_holder_is_free_again(holder):
    proc, metadata = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with exclusive_metadata(metadata):
                break
        except MetadataBusyError:
            assert time.monotonic() < deadline, "lock still held after its holder died"
            time.sleep(0.05)
