"""Input functions: ExampleGen's TFRecords through the Transform graph into
``tf.data`` datasets of ``({"image": [N,28,28,1] float32}, label [N] int64)``.

The transformed MNIST training set is 172 MB as float32, so by default
(``HParams.in_memory``) it is run through the Transform graph once, before the
fit, and held in memory by ``tf.data``'s cache (``cache_split``, which counts the
examples in the same pass): every epoch shuffles, batches and prefetches from
memory (``batches_from_cache``), all inside tf.data's C++ runtime, so no Python
runs per step and the cores stay on the model. The streaming path is
kept for data that does not fit. ``load_arrays`` and ``dataset_from_arrays`` serve
the benchmarks, which hold numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from trainer.tracing import exempt_tf_keras
from trainer.transform import IMAGE_KEY, LABEL_KEY

# The Transform layer mapped over the records is a tf_keras layer (trainer/tracing.py).
exempt_tf_keras()

_READ_BATCH = 2048

# Reading memory leaves tf.data's autotuner nothing to tune, and its model thread
# costs time: an iterator's destructor joins that thread, and with autotuning on
# `fit` returned 15-40 s after its last epoch in about half the full-MNIST runs,
# idle all that time (py-spy: RootDataset::Iterator::~Iterator waiting on the
# tf_data_model thread; 2026-11-27). With autotuning off there is no such thread;
# two batches prefetched keep the next step's input ready.
_PREFETCH_BATCHES = 2
_NO_AUTOTUNE_MODEL = tf.data.Options()
_NO_AUTOTUNE_MODEL.autotune.enabled = False


def tfrecord_files(file_patterns: Sequence[str]) -> list[str]:
    files: list[str] = []
    for pattern in file_patterns:
        files.extend(sorted(tf.io.gfile.glob(pattern)))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(file_patterns)}")
    return files


def compression(files: Sequence[str]) -> str:
    return "GZIP" if files[0].endswith(".gz") else ""


def transformed_batches(
    file_patterns: Sequence[str], tft_output: tft.TFTransformOutput, batch_size: int = _READ_BATCH
) -> tf.data.Dataset:
    """Batches of (features, labels) read in file order and run through the Transform graph."""
    files = tfrecord_files(file_patterns)
    raw_spec = tft_output.raw_feature_spec()
    tft_layer = tft_output.transform_features_layer()

    def parse_and_transform(serialized: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        transformed = tft_layer(tf.io.parse_example(serialized, raw_spec))
        labels = tf.reshape(tf.cast(transformed[LABEL_KEY], tf.int64), [-1])
        return {IMAGE_KEY: transformed[IMAGE_KEY]}, labels

    dataset = tf.data.TFRecordDataset(files, compression_type=compression(files))
    return dataset.batch(batch_size).map(parse_and_transform, num_parallel_calls=tf.data.AUTOTUNE)


def load_arrays(
    file_patterns: Sequence[str], tft_output: tft.TFTransformOutput
) -> tuple[np.ndarray, np.ndarray]:
    """The whole split, transformed, as numpy arrays (images [N,28,28,1], labels [N])."""
    images, labels = [], []
    for features, batch_labels in transformed_batches(file_patterns, tft_output):
        images.append(features[IMAGE_KEY].numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


def dataset_from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int | None,
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices(({IMAGE_KEY: images}, labels))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    # Full batches only in training keeps one static shape, so one trace.
    dataset = dataset.batch(batch_size, drop_remainder=shuffle).prefetch(_PREFETCH_BATCHES)
    return dataset.with_options(_NO_AUTOTUNE_MODEL)


def streaming_dataset(
    file_patterns: Sequence[str],
    tft_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool,
    seed: int | None,
) -> tf.data.Dataset:
    dataset = transformed_batches(file_patterns, tft_output).unbatch()
    if shuffle:
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=shuffle).prefetch(tf.data.AUTOTUNE)


def cache_split(
    file_patterns: Sequence[str], tft_output: tft.TFTransformOutput
) -> tuple[tf.data.Dataset, int]:
    """The split read, run through the Transform graph and held in memory by
    ``tf.data``'s cache, and its number of examples.

    The one pass that fills the cache also counts the examples, so the records are
    read and decompressed once: a separate counting pass over gzipped TFRecords cost
    as much as reading them. The cache belongs to the returned dataset, so every
    pipeline built on it (``batches_from_cache``) reads memory from its first pass."""
    cached = transformed_batches(file_patterns, tft_output).cache()
    count = cached.reduce(
        np.int64(0), lambda total, batch: total + tf.shape(batch[1], out_type=tf.int64)[0]
    )
    return cached, int(count.numpy())


def batches_from_cache(
    cached: tf.data.Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int | None,
    shuffle_buffer: int = 0,
) -> tf.data.Dataset:
    """Examples of a cached split (``cache_split``) rebatched to ``batch_size``.

    With ``shuffle``, the examples are reshuffled each pass through a buffer of
    ``shuffle_buffer`` examples (the split's size gives a uniform shuffle; 0 means
    10,000) and only full batches are produced, so the training step keeps one static
    shape and is traced once."""
    dataset = cached.unbatch()
    if shuffle:
        buffer = shuffle_buffer or 10_000
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=shuffle).prefetch(_PREFETCH_BATCHES)
    return dataset.with_options(_NO_AUTOTUNE_MODEL)


def cached_dataset(
    file_patterns: Sequence[str],
    tft_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool,
    seed: int | None,
    shuffle_buffer: int = 0,
) -> tf.data.Dataset:
    """The split transformed once and cached in memory: the first pass reads and
    transforms the records (in parallel batches of ``_READ_BATCH``), every later pass
    (an epoch, or the next per-epoch validation) reads the cache. Batching and
    shuffling as ``batches_from_cache``."""
    cached = transformed_batches(file_patterns, tft_output).cache()
    return batches_from_cache(cached, batch_size, shuffle, seed, shuffle_buffer)
