"""Tests of trainer/data.py's cached training input: transformed once, then read from
memory on every later pass, reshuffled each pass, full batches only."""

import shutil

import numpy as np
import pytest
import tensorflow as tf

from ingest.convert import image_to_example
from tests.transform_fixture import build_transform_output
from trainer import data
from trainer.transform import IMAGE_KEY

COUNT = 50


@pytest.fixture(scope="module")
def records(tmp_path_factory, mnist_train):
    """50 fixture images as a TFRecord file, its images and labels, and a Transform output."""
    images, labels = mnist_train
    root = tmp_path_factory.mktemp("data")
    path = root / "train.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(COUNT):
            writer.write(image_to_example(images[i], int(labels[i])).SerializeToString())
    return path, images[:COUNT], labels[:COUNT], build_transform_output(root, images, labels)


def passes(dataset: tf.data.Dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` full passes, each as (images, labels) concatenated."""
    result = []
    for _ in range(count):
        batches = list(dataset.as_numpy_iterator())
        result.append(
            (
                np.concatenate([f[IMAGE_KEY] for f, _ in batches]),
                np.concatenate([labels for _, labels in batches]),
            )
        )
    return result


def test_later_passes_read_the_cache_not_the_files(records, tmp_path):
    """After one full pass the files may go: the second pass still yields every
    example, transformed (pixels / 255, [28, 28, 1]), from memory."""
    source, images, labels, tft_output = records
    copy = tmp_path / "copy.tfrecord"
    shutil.copy(source, copy)
    dataset = data.cached_dataset([str(copy)], tft_output, 10, False, None)
    ((first_x, first_y),) = passes(dataset, 1)
    copy.unlink()
    ((second_x, second_y),) = passes(dataset, 1)
    np.testing.assert_array_equal(first_y, labels)
    np.testing.assert_array_equal(second_y, labels)
    np.testing.assert_allclose(second_x[..., 0], images.astype(np.float32) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(first_x, second_x)


def test_without_cache_the_second_pass_needs_the_files(records, tmp_path):
    """The check above can fail: the streaming path re-reads the (deleted) files."""
    source, _, _, tft_output = records
    copy = tmp_path / "copy.tfrecord"
    shutil.copy(source, copy)
    dataset = data.streaming_dataset([str(copy)], tft_output, 10, False, None)
    passes(dataset, 1)
    copy.unlink()
    with pytest.raises(tf.errors.NotFoundError):
        passes(dataset, 1)


def test_training_passes_are_reshuffled_full_batches(records):
    """Shuffled: each pass holds full batches of 20 only (40 of the 50), a different
    order each pass, and every label comes from the split."""
    source, _, labels, tft_output = records
    dataset = data.cached_dataset([str(source)], tft_output, 20, True, 7, shuffle_buffer=COUNT)
    shapes = {tuple(f[IMAGE_KEY].shape) for f, _ in dataset.as_numpy_iterator()}
    assert shapes == {(20, 28, 28, 1)}
    (_, first), (_, second) = passes(dataset, 2)
    assert len(first) == len(second) == 40
    assert not np.array_equal(first, second)
    assert set(first) | set(second) <= set(labels)


def test_cache_split_counts_and_fills_the_cache_in_one_pass(records, tmp_path):
    """``cache_split`` returns the number of examples (50, in two files of 30 and 20)
    and leaves the cache full: with both files deleted right after it, a shuffled
    training pipeline built on the cache still yields full batches of the split's
    examples, and an unshuffled one all 50 in file order."""
    source, images, labels, tft_output = records
    all_records = list(tf.data.TFRecordDataset(str(source)).as_numpy_iterator())
    paths = [tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"]
    for path, part in zip(paths, (all_records[:30], all_records[30:]), strict=True):
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in part:
                writer.write(record)
    cached, count = data.cache_split([str(tmp_path / "*.tfrecord")], tft_output)
    assert count == COUNT
    for path in paths:
        path.unlink()
    ((x, y),) = passes(data.batches_from_cache(cached, 16, False, None), 1)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(x[..., 0], images.astype(np.float32) / 255.0, rtol=1e-6)
    (_, shuffled), _ = passes(data.batches_from_cache(cached, 16, True, 3, count), 2)
    assert len(shuffled) == 48
    assert set(shuffled) <= set(labels) and not np.array_equal(shuffled, labels[:48])


def test_cache_split_refuses_a_pattern_with_no_files(records, tmp_path):
    _, _, _, tft_output = records
    with pytest.raises(FileNotFoundError, match="no TFRecord files match"):
        data.cache_split([str(tmp_path / "none-*.gz")], tft_output)
