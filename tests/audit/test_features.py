"""The input features, audited as the ML Test Score asks (docs/ml-test-score.md, Data 2-4).

The data has one input feature, ``image`` (784 raw bytes), and the ``label``. So "every
feature is beneficial" becomes: no feature in the data goes unused, and the one feature
carries the signal (an ablation: without it, the best guess is the class prior). "No
feature costs too much" becomes a bound on what turning the bytes into the model input
costs in memory and time. "Features meet the project's requirements" becomes: the data,
the Transform and the serving input hold exactly the allowed features with their types.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ingest.convert import example_feature_spec, image_to_example
from ingest.idx import read_idx_pair
from trainer.transform import preprocessing_fn, scale_pixels

# The only features a model may read (and the label it learns), with their stored types.
ALLOWED_FEATURES = {"image": (tf.string, ()), "label": (tf.int64, ())}
IMAGE_BYTES = 28 * 28
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _fixture_split(dataset: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    directory = FIXTURES / dataset
    return read_idx_pair(
        directory / f"{prefix}-images-idx3-ubyte.gz", directory / f"{prefix}-labels-idx1-ubyte.gz"
    )


def _raw_inputs(images: np.ndarray, labels: np.ndarray) -> dict[str, tf.Tensor]:
    """A batch as the Transform component sees it: parsed from serialized Examples."""
    serialized = [
        image_to_example(image, int(label)).SerializeToString()
        for image, label in zip(images, labels, strict=True)
    ]
    return tf.io.parse_example(tf.constant(serialized), example_feature_spec())


def test_data_and_transform_hold_exactly_the_allowed_features(mnist_train):
    """The Example format stores exactly the allowed features with their types, and the
    Transform neither drops one nor invents another; at serving time (no label) it
    outputs the image alone, so a served model can read nothing else."""
    spec = example_feature_spec()
    assert {name: (f.dtype, tuple(f.shape)) for name, f in spec.items()} == ALLOWED_FEATURES

    images, labels = mnist_train
    outputs = preprocessing_fn(_raw_inputs(images[:4], labels[:4]))
    assert set(outputs) == set(ALLOWED_FEATURES)
    assert outputs["image"].dtype == tf.float32 and outputs["image"].shape == (4, 28, 28, 1)

    serving = preprocessing_fn({"image": _raw_inputs(images[:4], labels[:4])["image"]})
    assert set(serving) == {"image"}


def test_every_stored_feature_reaches_the_model_input(mnist_train):
    """No stored feature is dead weight: changing one pixel byte changes exactly that
    value of the transformed image, and the label arrives unchanged."""
    images, labels = mnist_train
    changed = images[:2].copy()
    changed[1, 13, 7] = 255 - changed[1, 13, 7]
    before = preprocessing_fn(_raw_inputs(images[:2], labels[:2]))
    after = preprocessing_fn(_raw_inputs(changed, labels[:2]))
    difference = np.argwhere(before["image"].numpy() != after["image"].numpy())
    assert difference.tolist() == [[1, 13, 7, 0]]
    np.testing.assert_array_equal(after["label"].numpy(), labels[:2].astype(np.int64))


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_the_image_feature_carries_the_signal(dataset):
    """Ablation of the one feature: with it, even a nearest-class-mean rule on the scaled
    pixels gets most held-out images right; without it, the best a model can do is the
    most frequent training class, which the balanced fixture makes 10 %."""
    train_images, train_labels = _fixture_split(dataset, "train")
    eval_images, eval_labels = _fixture_split(dataset, "t10k")
    pixels = train_images.reshape(len(train_images), -1) / 255.0
    centroids = np.stack([pixels[train_labels == k].mean(axis=0) for k in range(10)])
    eval_pixels = eval_images.reshape(len(eval_images), -1) / 255.0
    distances = ((eval_pixels[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    with_feature = float(np.mean(distances.argmin(axis=1) == eval_labels))
    without_feature = float(np.mean(eval_labels == np.bincount(train_labels).argmax()))
    assert without_feature <= 0.15
    assert with_feature >= 0.6, with_feature
    assert with_feature > 4 * without_feature


def test_the_image_feature_costs_little(mnist_train):
    """The feature's cost: the model input is 4 bytes per raw byte (float32, nothing
    else is materialised per image), and turning 10,000 images into it stays far below
    a second (measured in milliseconds; the bound only catches a costly change)."""
    images, _ = mnist_train
    raw = tf.constant([image.tobytes() for image in np.resize(images, (10_000, 28, 28))])
    scale_pixels(raw[:10])  # first call builds the kernels; not part of the cost
    start = time.perf_counter()
    scaled = scale_pixels(raw)
    seconds = time.perf_counter() - start
    assert scaled.dtype == tf.float32 and scaled.shape == (10_000, 28, 28, 1)
    assert scaled.numpy().nbytes == 10_000 * IMAGE_BYTES * 4
    assert seconds < 2.0, f"scaling 10,000 images took {seconds:.2f} s"
