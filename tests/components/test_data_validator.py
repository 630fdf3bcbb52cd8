"""The ExampleValidator stops the run: data profiles, TFDV drift between them, and the
real pipeline refusing Fashion-MNIST images fed into the MNIST pipeline and data
with a feature the served (baseline) model's schema does not know."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.data_validator import profile as data_profile
from components.data_validator.executor import (
    _BOUND_FLAGS,
    check_drift,
    describe_anomalies,
    drift_figures,
)
from tests.pipeline_fixture import (
    FIXTURES,
    fail_text,
    listing,
    pipeline_args,
    run_cli,
    tamper_tfrecord,
)


def _profile(images: np.ndarray, labels: np.ndarray) -> data_profile.DataProfile:
    profile = data_profile.DataProfile()
    profile.add_images(images.reshape(len(images), -1), labels)
    return profile


# ---------------------------------------------------------------- profiles and drift


def test_profile_of_the_fixture_counts_every_image(mnist_train, fashion_train):
    mnist = _profile(*mnist_train)
    fashion = _profile(*fashion_train)
    assert mnist.num_examples == 300 and sum(mnist.label_counts) == 300
    assert mnist.label_counts == np.bincount(mnist_train[1], minlength=10).tolist()
    for profile in (mnist, fashion):
        for name in data_profile.PROFILE_FEATURES:
            assert len(profile.histograms[name]) == data_profile.BUCKETS
            assert sum(profile.histograms[name]) == 300
    # Digits are thin strokes on black; clothes fill much more of the frame.
    assert 0.10 < mnist.mean("image_mean_intensity") < 0.16
    assert 0.22 < fashion.mean("image_mean_intensity") < 0.36
    assert mnist.mean("image_mean_intensity") == pytest.approx(
        float(mnist_train[0].astype(np.float64).mean() / 255), abs=1e-6
    )


def test_profile_of_tfrecords_equals_profile_of_the_arrays(tmp_path, mnist_train):
    images, labels = mnist_train
    path = tmp_path / "train.tfrecord.gz"
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for image, label in zip(images, labels, strict=True):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image": tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[image.tobytes()])
                        ),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                    }
                )
            )
            writer.write(example.SerializeToString())
    from_files = data_profile.profile_tfrecords([str(path)])
    from_arrays = _profile(images, labels)
    assert from_files.histograms == from_arrays.histograms
    assert from_files.label_counts == from_arrays.label_counts


def test_profile_round_trips_and_rejects_another_format(tmp_path, mnist_train):
    profile = _profile(*mnist_train)
    again = data_profile.DataProfile.from_json(profile.to_json())
    assert again == profile
    broken = json.loads(profile.to_json())
    broken["buckets"] = 10
    with pytest.raises(ValueError, match=r"model/train_profile.json: expected a data profile"):
        data_profile.DataProfile.from_json(json.dumps(broken), "model/train_profile.json")


def test_fashion_images_drift_from_mnist_and_mnist_does_not(mnist_train, mnist_eval, fashion_train):
    mnist, fashion = _profile(*mnist_train), _profile(*fashion_train)
    drift = check_drift(fashion, mnist, 0.1, 0.1)
    figures = drift_figures(drift)
    assert set(drift.anomaly_info) == {"image_mean_intensity", "image_ink_fraction"}
    assert figures["image_mean_intensity"] > 0.3 and figures["image_ink_fraction"] > 0.3
    assert figures["label"] < 0.1  # both datasets have balanced labels
    lines = describe_anomalies("train", drift, _BOUND_FLAGS)
    assert lines[1].startswith(
        "split 'train': feature 'image_mean_intensity': drifted from the baseline model's "
        "training data: Jensen-Shannon divergence 0."
    )
    assert lines[1].endswith("> bound 0.1 (--max-drift)")

    same = check_drift(mnist, mnist, 0.1, 0.1)
    assert not same.anomaly_info
    assert set(drift_figures(same).values()) == {0.0}
    # Another sample of the same dataset stays far inside the bound.
    other = drift_figures(check_drift(_profile(*mnist_eval), mnist, 0.1, 0.1))
    assert other["image_mean_intensity"] < 0.05


def test_label_distribution_drift_names_its_flag(mnist_train):
    images, labels = mnist_train
    baseline = _profile(images, labels)
    only_012 = labels < 3
    current = _profile(images[only_012], labels[only_012])
    drift = check_drift(current, baseline, 0.9, 0.1)
    assert set(drift.anomaly_info) == {"label"}
    # Each of three digits holds a third of the data instead of about a tenth.
    assert drift_figures(drift)["label"] == pytest.approx(1 / 3 - 0.1, abs=0.05)
    (line,) = describe_anomalies("train", drift, _BOUND_FLAGS)
    assert "L-infinity distance" in line and line.endswith("(--max-label-drift)")


# ---------------------------------------------------------------- the pipeline stops


def _executions(metadata: Path) -> dict[str, int]:
    with sqlite3.connect(metadata) as db:
        rows = db.execute(
            "SELECT t.name, COUNT(*) FROM Execution e JOIN Type t ON e.type_id = t.id "
            "GROUP BY t.name"
        ).fetchall()
    return {name.rsplit(".", 1)[-1]: count for name, count in rows}


@pytest.fixture(scope="module")
def blessed_mnist(tmp_path_factory) -> Path:
    """One MNIST fixture run that pushes a model: the baseline of the runs below."""
    root = tmp_path_factory.mktemp("validation")
    proc = run_cli(*pipeline_args("mnist", root), cwd=root)
    assert proc.returncode == 0, fail_text(proc)
    return root


def _serving(root: Path) -> Path:
    return root / "out" / "serving" / "mnist"


@pytest.mark.e2e
@pytest.mark.slow
def test_fashion_images_into_the_mnist_pipeline_are_stopped(blessed_mnist):
    root = blessed_mnist
    metadata = root / "out" / "mnist_cnn" / "metadata.sqlite"
    before = listing(_serving(root))
    executions_before = _executions(metadata)
    assert before, "the first run pushed nothing"
    proc = run_cli(
        *pipeline_args("mnist", root, "--epochs", "1"),
        "--source",
        str(FIXTURES / "fashion_mnist"),
        "--data-dir",
        str(root / "fashion_data"),
        cwd=root,
    )
    assert proc.returncode == 2, fail_text(proc)
    assert (
        f"error: {root / 'fashion_data' / 'tfrecords' / 'mnist'}: the ExampleValidator stopped "
        "the run; nothing was transformed, trained or pushed." in proc.stderr
    )
    assert "feature 'image_mean_intensity': drifted from the baseline model's" in proc.stderr
    assert "> bound 0.1 (--max-drift)" in proc.stderr
    # Nothing after the validator ran, and the serving directory is unchanged.
    after = _executions(metadata)
    for component in ("Transform", "Trainer", "Evaluator", "Pusher"):
        assert after.get(component) == executions_before.get(component), component
    assert listing(_serving(root)) == before


@pytest.mark.e2e
@pytest.mark.slow
def test_a_feature_the_blessed_schema_does_not_know_is_stopped(blessed_mnist, tmp_path):
    root = blessed_mnist
    # One training record gains a feature the blessed model's schema lacks.
    tamper_tfrecord(tmp_path, lambda features: features["scanner"].bytes_list.value.append(b"v2"))
    before = listing(_serving(root))
    proc = run_cli(
        *pipeline_args("mnist", root, "--epochs", "1"),
        "--data-dir",
        str(tmp_path / "data"),
        cwd=root,
    )
    assert proc.returncode == 2, fail_text(proc)
    assert "split 'train': feature 'scanner': New column" in proc.stderr
    assert "the baseline model's training schema" in proc.stderr
    assert listing(_serving(root)) == before
