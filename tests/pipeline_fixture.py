"""Helpers of the tests that run the real ``mnist-tfx`` command on the committed
fixture (``tests/pipeline/``, ``tests/ingest/test_spans.py``, ...)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tensorflow as tf

FIXTURES = Path(__file__).parent / "fixtures"


def run_cli(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra_env)
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def pipeline_args(dataset: str, root: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--dataset",
        dataset,
        "--source",
        str(FIXTURES / dataset),
        "--data-dir",
        str(root / "data"),
        "--output-root",
        str(root / "out"),
        "--epochs",
        "3",
        "--batch-size",
        "50",
        # A few hundred training images give roughly 60-85 %; the floor only has to
        # separate a trained model from an untrained one (10 %).
        "--min-accuracy",
        "0.4",
        "--min-class-accuracy",
        "0",
        *extra,
    ]


def listing(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def fail_text(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"


def tamper_tfrecord(tmp_path: Path, change) -> Path:
    """Convert the fixture, then replace record 5 of the first training shard."""
    proc = run_cli(
        "convert",
        "--dataset",
        "mnist",
        "--source",
        str(FIXTURES / "mnist"),
        "--data-dir",
        str(tmp_path / "data"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, fail_text(proc)
    shard = sorted((tmp_path / "data" / "tfrecords" / "mnist" / "span-0" / "train").iterdir())[0]
    records = list(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())
    example = tf.train.Example.FromString(records[5])
    change(example.features.feature)
    records[5] = example.SerializeToString()
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)
    return shard
