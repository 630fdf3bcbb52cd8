"""The validation split: 1/12 of the official training examples, stratified by class,
chosen deterministically, disjoint from train and together with it the whole file."""

import numpy as np
import pytest

from ingest.convert import (
    VALIDATION_SEED,
    hold_out_validation,
    indices_sha256,
    stratified_counts,
    validation_size,
    validation_split,
)
from tests.ingest.test_convert import fixture_split


def synthetic_labels(count: int = 60000, seed: int = 7) -> np.ndarray:
    """Unequal classes, as in real MNIST (5,421 to 6,742 per digit there)."""
    weights = np.array([0.099, 0.112, 0.099, 0.102, 0.097, 0.090, 0.099, 0.104, 0.098, 0.100])
    return np.random.default_rng(seed).choice(10, size=count, p=weights / weights.sum())


def test_60000_labels_give_5000_within_one_of_a_twelfth_per_class() -> None:
    labels = synthetic_labels()
    split = validation_split(labels)
    class_sizes = np.bincount(labels, minlength=10)
    assert len(split.indices) == sum(split.per_class_counts) == 5000
    assert np.bincount(labels[split.indices], minlength=10).tolist() == list(split.per_class_counts)
    assert np.all(np.abs(np.array(split.per_class_counts) - class_sizes / 12) < 1)
    assert len(set(split.per_class_counts)) > 1  # unequal classes, unequal counts


def test_the_split_is_deterministic_and_depends_on_the_seed() -> None:
    labels = synthetic_labels()
    first, second = validation_split(labels), validation_split(labels)
    np.testing.assert_array_equal(first.indices, second.indices)
    assert first.seed == second.seed == VALIDATION_SEED
    other = validation_split(labels, seed=VALIDATION_SEED + 1)
    assert other.per_class_counts == first.per_class_counts
    assert not np.array_equal(other.indices, first.indices)


def test_train_and_validation_are_disjoint_and_make_up_the_training_file() -> None:
    labels = synthetic_labels()
    images = np.arange(len(labels), dtype=np.int64)  # each "image" is its own index
    (train_x, train_y), (valid_x, valid_y), record = hold_out_validation(images, labels)
    assert len(train_x) == 55000 and len(valid_x) == 5000
    assert set(train_x.tolist()).isdisjoint(valid_x.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([train_x, valid_x])), images)
    # File order kept in both parts; labels travel with their images.
    assert np.all(np.diff(train_x) > 0) and np.all(np.diff(valid_x) > 0)
    np.testing.assert_array_equal(train_y, labels[train_x])
    np.testing.assert_array_equal(valid_y, labels[valid_x])
    assert record["indices"] == valid_x.tolist()
    assert record["count"] == 5000 and sum(record["per_class_counts"]) == 5000
    assert record["indices_sha256"] == indices_sha256(valid_x)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_exact_per_class_counts_on_the_fixture(dataset: str) -> None:
    """300 images, 30 per class: 25 = 2.5 per class, the five extra to labels 0-4."""
    _, labels = fixture_split(dataset, "train")
    split = validation_split(labels)
    assert split.per_class_counts == (3, 3, 3, 3, 3, 2, 2, 2, 2, 2)
    assert np.bincount(labels[split.indices], minlength=10).tolist() == [3] * 5 + [2] * 5
    assert len(split.indices) == 25 == len(set(split.indices.tolist()))


def test_largest_remainder_allocation() -> None:
    # Quotas 10 * 7/20 = 3.5, 10 * 9/20 = 4.5, 10 * 4/20 = 2: floors 3, 4, 2 and one
    # spare unit, which goes to the lower label of the two equal remainders.
    assert stratified_counts(np.array([7, 9, 4]), 10) == (4, 4, 2)
    # Quotas 6 * 5/12 = 2.5, 6 * 6/12 = 3, 6 * 1/12 = 0.5: remainders 30, 0, 6 of 12.
    assert stratified_counts(np.array([5, 6, 1]), 6) == (3, 3, 0)
    assert stratified_counts(np.array([0, 12]), 1) == (0, 1)
    with pytest.raises(ValueError, match="cannot hold out 13 of 12 examples"):
        stratified_counts(np.array([6, 6]), 13)


@pytest.mark.parametrize(
    ("count", "size"), [(60000, 5000), (300, 25), (150, 13), (6, 1), (17, 1), (18, 2)]
)
def test_validation_size_is_a_twelfth_rounded_half_up(count: int, size: int) -> None:
    assert validation_size(count) == size


def test_an_offset_names_examples_of_the_official_file() -> None:
    """With ``ingest --slice 100:400`` the recorded indices are positions in the whole
    training file, not in the slice."""
    labels = synthetic_labels(300)
    images = np.arange(100, 400)
    _, (valid_x, _), record = hold_out_validation(images, labels, offset=100)
    assert record["indices"] == valid_x.tolist()
    assert min(record["indices"]) >= 100 and max(record["indices"]) < 400


def test_too_few_examples_for_a_validation_split_are_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"5 training examples leave no validation examples \(1/12 rounds to 0\); "
        r"expected at least 6",
    ):
        validation_split(np.arange(5) % 10)
