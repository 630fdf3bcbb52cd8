"""Faults, for real: bad input data of each kind, and the pipeline process killed
with SIGKILL during each long component and during the push.

Each case runs the real ``mnist-tfx run`` (LocalDagRunner, SQLite ML Metadata,
Beam DirectRunner) on the committed fixture in a subprocess.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

from pipeline.pipeline import COMPONENT_ORDER
from serving.publish import LOCK_NAME, TEMP_PREFIX, list_versions
from tests.pipeline_fixture import FIXTURES, fail_text, pipeline_args, run_cli, tamper_tfrecord

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# ---------------------------------------------------------------- bad input data


def _idx_source(root: Path, dataset: str = "mnist") -> Path:
    """A copy of the fixture's IDX files, as a directory a user would name."""
    source = root / "source"
    source.mkdir()
    for path in (FIXTURES / dataset).glob("*.gz"):
        (source / path.name).write_bytes(path.read_bytes())
    return source


def _rewrite_gz(path: Path, change) -> None:
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes())), mtime=0))


def _write_sha256sums(source: Path) -> None:
    """The user's own checksums of their files: the files are what they meant to
    supply, so it is the IDX reader, not the checksum, that must find the problem."""
    lines = [
        f"{hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()}  {p.name[:-3]}"
        for p in sorted(source.glob("*.gz"))
    ]
    (source / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _run_bad_idx(tmp_path: Path, source: Path) -> subprocess.CompletedProcess:
    proc = run_cli(*pipeline_args("mnist", tmp_path, "--source", str(source)), cwd=tmp_path)
    assert proc.returncode == 2, fail_text(proc)
    # The reader fails before any pipeline state exists: nothing downstream, no push.
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "data" / "tfrecords" / "mnist").exists()
    return proc


def test_corrupted_idx_header(tmp_path):
    source = _idx_source(tmp_path)
    _rewrite_gz(source / "train-images-idx3-ubyte.gz", lambda b: b[:2] + b"\x0d\x03" + b[4:])
    _write_sha256sums(source)
    proc = _run_bad_idx(tmp_path, source)
    assert "train-images-idx3-ubyte" in proc.stderr
    assert "wrong dtype code: expected 0x08 (unsigned byte), found 0x0d" in proc.stderr


def test_truncated_image_file(tmp_path):
    source = _idx_source(tmp_path)
    _rewrite_gz(source / "t10k-images-idx3-ubyte.gz", lambda b: b[:-1000])
    _write_sha256sums(source)
    proc = _run_bad_idx(tmp_path, source)
    assert "t10k-images-idx3-ubyte" in proc.stderr
    assert "truncated: header says 200 images of 28x28" in proc.stderr


def test_label_file_of_the_other_dataset(tmp_path):
    source = _idx_source(tmp_path)
    # Fashion-MNIST's test labels (200) beside MNIST's training images (300).
    (source / "train-labels-idx1-ubyte.gz").write_bytes(
        (FIXTURES / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    )
    _write_sha256sums(source)
    proc = _run_bad_idx(tmp_path, source)
    assert "train-labels-idx1-ubyte" in proc.stderr
    assert "count mismatch" in proc.stderr
    assert "found 300 images and 200 labels" in proc.stderr


def _run_bad_tfrecord(tmp_path: Path) -> subprocess.CompletedProcess:
    proc = run_cli(*pipeline_args("mnist", tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, fail_text(proc)
    artifacts = tmp_path / "out" / "mnist_cnn" / "artifacts"
    # ExampleGen failed; nothing after it ran, nothing was pushed.
    assert not (artifacts / "StatisticsGen").exists()
    assert not (artifacts / "Trainer").exists()
    assert not (tmp_path / "out" / "serving").exists()
    return proc


def test_tfrecord_with_a_missing_feature(tmp_path):
    shard = tamper_tfrecord(tmp_path, lambda features: features.pop("label"))
    proc = _run_bad_tfrecord(tmp_path)
    assert f"error: {shard}: record 5: feature 'label' is missing" in proc.stderr


def test_images_of_the_wrong_size(tmp_path):
    def enlarge(features):
        features["image"].bytes_list.value[0] = bytes(32 * 32)

    shard = tamper_tfrecord(tmp_path, enlarge)
    proc = _run_bad_tfrecord(tmp_path)
    assert f"error: {shard}: record 5: feature 'image' has 1024 bytes, expected 784" in proc.stderr


# ---------------------------------------------------------------- SIGKILL


def _start(root: Path) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *pipeline_args("mnist", root)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill_when(proc: subprocess.Popen, appeared, what: str, timeout: float = 600) -> None:
    """SIGKILL the run's whole process group as soon as ``appeared()`` is true."""
    deadline = time.monotonic() + timeout
    while not appeared():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _new_execution_dir(artifacts: Path, component: str, output: str):
    directory = artifacts / component / output
    before = set(directory.iterdir()) if directory.exists() else set()
    return lambda: directory.exists() and bool(set(directory.iterdir()) - before)


def _complete_versions_only(serving: Path, allow_staging: bool = False) -> list[int]:
    """Every integer-named directory is a whole SavedModel (loadable), and nothing
    but staging directories sits beside them."""
    if not serving.exists():
        return []
    for entry in serving.iterdir():
        if entry.name.isdigit():
            assert (entry / "saved_model.pb").is_file(), entry
            assert (entry / "assets.extra" / "expected_predictions.json").is_file(), entry
            tf.saved_model.load(str(entry))
        else:
            # A push killed while holding the publishing lock leaves its lock file.
            if entry.name == LOCK_NAME:
                continue
            assert allow_staging and entry.name.startswith(TEMP_PREFIX), entry
    return list_versions(serving)


def _states(metadata: Path) -> dict[str, str]:
    """Component -> state in the latest pipeline run, read from ML Metadata."""
    from pipeline.run_summary import summarize_run

    summary = summarize_run(str(metadata), "mnist_cnn")
    return {c.name: c.state for c in summary.components}


def test_sigkill_during_each_long_component_and_the_push(tmp_path):
    out = tmp_path / "out"
    artifacts = out / "mnist_cnn" / "artifacts"
    serving = out / "serving" / "mnist"
    metadata = out / "mnist_cnn" / "metadata.sqlite"
    kill_points = [
        ("Transform", _new_execution_dir(artifacts, "Transform", "transform_graph")),
        ("Trainer", _new_execution_dir(artifacts, "Trainer", "model")),
        ("Evaluator", _new_execution_dir(artifacts, "Evaluator", "evaluation")),
        ("Pusher", lambda: serving.exists() and any(serving.glob(f"{TEMP_PREFIX}*"))),
    ]
    for component, appeared in kill_points:
        proc = _start(tmp_path)
        _kill_when(proc, appeared, f"{component} to start")
        # Killed mid-way: never a half-written version, the store still opens.
        assert _complete_versions_only(serving, allow_staging=component == "Pusher") == []
        with sqlite3.connect(metadata) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # The push was killed after staging and before the rename.
    assert any(serving.glob(f"{TEMP_PREFIX}*"))

    proc = run_cli(*pipeline_args("mnist", tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, fail_text(proc)
    states = _states(metadata)
    # Everything the killed runs finished is reused from the cache, the
    # ExampleValidator included: the run killed in the Pusher had blessed its model, but
    # a blessed model that was never pushed is not the baseline (the served model is,
    # and nothing is served), so the validator's inputs are unchanged.
    for component in (*COMPONENT_ORDER[: COMPONENT_ORDER.index("Trainer")], "Trainer"):
        assert states[component] == "CACHED", (component, states)
    assert states["Pusher"] == "COMPLETE"
    (version,) = _complete_versions_only(serving)
    assert sorted(p.name for p in serving.iterdir()) == [str(version)]  # staging cleared
