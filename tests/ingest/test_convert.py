"""Tests of IDX -> TFRecord conversion on the real-data fixture, read back with TF."""

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ingest.convert import (
    MANIFEST_FILE,
    VALIDATION_SEED,
    ConversionResult,
    convert_dataset,
    example_feature_spec,
    image_to_example,
    indices_sha256,
    load_conversion,
    parse_example_bytes,
    validation_split,
    write_split,
)
from ingest.datasets import IMAGE_KEY, LABEL_KEY, get_dataset
from ingest.fetch import (
    MANIFEST_NAME,
    DataIntegrityError,
    find_idx_files,
    format_manifest,
    read_manifest,
    sha256_of_idx,
)
from ingest.idx import IdxFormatError, read_idx_pair

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_split(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one fixture split, straight from the IDX reader."""
    info = get_dataset(dataset)
    files = find_idx_files(FIXTURES / dataset, info)
    return read_idx_pair(
        files[info.file_for(split, "images").stem], files[info.file_for(split, "labels").stem]
    )


def read_back_with_parser(shards: tuple[Path, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Decode shards in order with the numpy-side parser."""
    decoded = [
        parse_example_bytes(record.numpy())
        for record in tf.data.TFRecordDataset([str(p) for p in shards])
    ]
    return np.stack([image for image, _ in decoded]), np.array([label for _, label in decoded])


def read_back_with_tf(shards: tuple[Path, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Decode shards the way a TF input pipeline would: parse_example + decode_raw."""
    images, labels = [], []
    dataset = tf.data.TFRecordDataset([str(p) for p in shards]).batch(64)
    for batch in dataset:
        features = tf.io.parse_example(batch, example_feature_spec())
        pixels = tf.io.decode_raw(features[IMAGE_KEY], tf.uint8)
        images.append(tf.reshape(pixels, [-1, 28, 28]).numpy())
        labels.append(features[LABEL_KEY].numpy())
    return np.concatenate(images), np.concatenate(labels)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (inode, mtime_ns) of every file below directory."""
    return {
        path.relative_to(directory).as_posix(): (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def mnist_conversion(tmp_path_factory: pytest.TempPathFactory) -> ConversionResult:
    """The MNIST fixture converted once with default shard counts."""
    return convert_dataset(
        FIXTURES / "mnist", tmp_path_factory.mktemp("converted") / "mnist", "mnist"
    )


def test_example_round_trip_of_one_real_image() -> None:
    images, labels = fixture_split("fashion_mnist", "train")
    example = image_to_example(images[7], int(labels[7]))
    image_feature = example.features.feature[IMAGE_KEY].bytes_list.value
    assert len(image_feature) == 1 and image_feature[0] == images[7].tobytes()
    image, label = parse_example_bytes(example.SerializeToString())
    assert image.dtype == np.uint8 and image.shape == (28, 28)
    np.testing.assert_array_equal(image, images[7])
    assert label == labels[7]


def test_image_to_example_rejects_bad_input() -> None:
    with pytest.raises(
        ValueError, match=r"expected a uint8 image of shape \(28, 28\), found float32 \(28, 28\)"
    ):
        image_to_example(np.zeros((28, 28), np.float32), 1)
    with pytest.raises(ValueError, match=r"found uint8 \(32, 32\)"):
        image_to_example(np.zeros((32, 32), np.uint8), 1)
    with pytest.raises(ValueError, match=r"expected a label in 0..9, found 10"):
        image_to_example(np.zeros((28, 28), np.uint8), 10)


def test_non_contiguous_image_is_encoded_row_major() -> None:
    images, _ = fixture_split("mnist", "test")
    transposed = images[0].T  # a Fortran-ordered view
    image, _ = parse_example_bytes(image_to_example(transposed, 3).SerializeToString())
    np.testing.assert_array_equal(image, transposed)


def test_parse_rejects_wrong_image_size() -> None:
    example = image_to_example(np.zeros((28, 28), np.uint8), 0)
    example.features.feature[IMAGE_KEY].bytes_list.value[0] = b"\x00" * 100
    with pytest.raises(
        ValueError, match=r"expected one 784-byte 'image' value, found sizes \[100\]"
    ):
        parse_example_bytes(example.SerializeToString())


def test_conversion_counts_shards_and_layout(mnist_conversion: ConversionResult) -> None:
    output = mnist_conversion.output_dir
    assert mnist_conversion.dataset == "mnist" and not mnist_conversion.reused
    assert mnist_conversion.counts == {"train": 275, "validation": 25, "test": 200}
    assert [p.name for p in mnist_conversion.shards["train"]] == [
        f"data-0000{index}-of-00004.tfrecord" for index in range(4)
    ]
    for split in ("validation", "test"):
        assert [p.name for p in mnist_conversion.shards[split]] == ["data-00000-of-00001.tfrecord"]
    assert sorted(
        p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file()
    ) == sorted(
        [MANIFEST_FILE]
        + [f"train/data-0000{index}-of-00004.tfrecord" for index in range(4)]
        + ["validation/data-00000-of-00001.tfrecord", "test/data-00000-of-00001.tfrecord"]
    )
    # No staging directory left beside the output.
    assert [p.name for p in output.parent.iterdir()] == ["mnist"]
    per_shard = [
        sum(1 for _ in tf.data.TFRecordDataset(str(p))) for p in mnist_conversion.shards["train"]
    ]
    assert per_shard == [68, 69, 69, 69]


def test_test_split_is_the_official_test_file(mnist_conversion: ConversionResult) -> None:
    expected_images, expected_labels = fixture_split("mnist", "test")
    for read_back in (read_back_with_parser, read_back_with_tf):
        images, labels = read_back(mnist_conversion.shards["test"])
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)


def test_train_and_validation_partition_the_official_training_file(
    mnist_conversion: ConversionResult,
) -> None:
    """Validation is exactly the recorded indices, train is every other example, both
    in file order: together they are the official training file, nothing lost or doubled."""
    expected_images, expected_labels = fixture_split("mnist", "train")
    held_out = np.array(mnist_conversion.validation["indices"])
    kept = np.setdiff1d(np.arange(len(expected_labels)), held_out)
    assert len(held_out) == 25 and len(kept) == 275
    for read_back in (read_back_with_parser, read_back_with_tf):
        images, labels = read_back(mnist_conversion.shards["validation"])
        np.testing.assert_array_equal(images, expected_images[held_out])
        np.testing.assert_array_equal(labels, expected_labels[held_out])
        images, labels = read_back(mnist_conversion.shards["train"])
        np.testing.assert_array_equal(images, expected_images[kept])
        np.testing.assert_array_equal(labels, expected_labels[kept])
    # Per class: the fixture has 30 of each; 25 = 5 x 3 + 5 x 2, the extra ones to
    # the lower labels (equal remainders).
    _, validation_labels = read_back_with_parser(mnist_conversion.shards["validation"])
    assert np.bincount(validation_labels, minlength=10).tolist() == [3] * 5 + [2] * 5


def test_manifest_content(mnist_conversion: ConversionResult) -> None:
    manifest = json.loads((mnist_conversion.output_dir / MANIFEST_FILE).read_text())
    assert manifest["dataset"] == "mnist"
    assert manifest["format_version"] == 2
    assert manifest["counts"] == {"train": 275, "validation": 25, "test": 200}
    assert manifest["source_sha256"] == read_manifest(FIXTURES / "mnist" / MANIFEST_NAME)
    assert manifest["shards"] == {
        "train": [f"train/data-0000{index}-of-00004.tfrecord" for index in range(4)],
        "validation": ["validation/data-00000-of-00001.tfrecord"],
        "test": ["test/data-00000-of-00001.tfrecord"],
    }
    assert manifest["class_names"] == [str(digit) for digit in range(10)]
    loaded = load_conversion(mnist_conversion.output_dir)
    assert loaded.shards == mnist_conversion.shards
    assert loaded.validation == manifest["validation"]


def test_manifest_records_the_validation_split(mnist_conversion: ConversionResult) -> None:
    """The record names the seed, the per-class counts and the held-out indices of the
    official training file, and recomputing the split from the labels gives them back."""
    record = json.loads((mnist_conversion.output_dir / MANIFEST_FILE).read_text())["validation"]
    _, train_labels = fixture_split("mnist", "train")
    expected = validation_split(train_labels, VALIDATION_SEED)
    assert record["seed"] == VALIDATION_SEED
    assert record["fraction"] == "1/12" and record["count"] == 25
    assert record["per_class_counts"] == [3] * 5 + [2] * 5
    assert record["indices"] == expected.indices.tolist()
    assert record["indices"] == sorted(set(record["indices"]))
    assert (
        np.bincount(train_labels[record["indices"]], minlength=10).tolist()
        == (record["per_class_counts"])
    )
    assert record["indices_sha256"] == indices_sha256(np.array(record["indices"]))
    assert (
        record["indices_sha256"]
        == hashlib.sha256(",".join(map(str, record["indices"])).encode()).hexdigest()
    )


def test_output_directory_mode_follows_umask_like_any_new_directory(tmp_path: Path) -> None:
    output = tmp_path / "mnist"
    convert_dataset(FIXTURES / "mnist", output, "mnist", train_shards=1)
    reference = tmp_path / "made-with-mkdir"
    reference.mkdir()
    assert output.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_second_conversion_is_skipped(tmp_path: Path) -> None:
    output = tmp_path / "fashion"
    first = convert_dataset(FIXTURES / "fashion_mnist", output, "fashion_mnist", train_shards=2)
    before = snapshot(output)
    second = convert_dataset(FIXTURES / "fashion_mnist", output, "fashion_mnist", train_shards=2)
    assert second.reused and not first.reused
    assert (second.counts, second.shards, second.source_sha256) == (
        first.counts,
        first.shards,
        first.source_sha256,
    )
    assert snapshot(output) == before


def test_changed_shard_count_reconverts_and_drops_old_shards(tmp_path: Path) -> None:
    output = tmp_path / "fashion"
    convert_dataset(FIXTURES / "fashion_mnist", output, "fashion_mnist", train_shards=4)
    result = convert_dataset(
        FIXTURES / "fashion_mnist", output, "fashion_mnist", train_shards=3, test_shards=2
    )
    assert not result.reused
    assert sorted(p.name for p in (output / "train").iterdir()) == [
        f"data-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    assert sorted(p.name for p in (output / "test").iterdir()) == [
        f"data-0000{i}-of-00002.tfrecord" for i in range(2)
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["fashion"]


def test_a_two_split_conversion_is_replaced_without_its_eval_directory(tmp_path: Path) -> None:
    """A format-1 conversion (train and eval, no validation) is converted again, and
    its eval directory does not outlive it."""
    output = tmp_path / "mnist"
    convert_dataset(FIXTURES / "mnist", output, "mnist", train_shards=1)
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    (output / "test").rename(output / "eval")
    shutil.rmtree(output / "validation")
    manifest.update(
        format_version=1,
        counts={"train": 300, "eval": 200},
        shards={
            "train": manifest["shards"]["train"],
            "eval": ["eval/data-00000-of-00001.tfrecord"],
        },
    )
    del manifest["validation"]
    (output / MANIFEST_FILE).write_text(json.dumps(manifest))
    result = convert_dataset(FIXTURES / "mnist", output, "mnist", train_shards=1)
    assert not result.reused
    assert result.counts == {"train": 275, "validation": 25, "test": 200}
    assert sorted(p.name for p in output.iterdir()) == [
        MANIFEST_FILE,
        "test",
        "train",
        "validation",
    ]


def copy_with_bad_label(tmp_path: Path) -> Path:
    """Fixture copy whose test labels hold a 10, with a manifest that vouches for it.

    Verification passes (the manifest matches), so the reader is what must stop it.
    """
    directory = tmp_path / "bad-idx"
    shutil.copytree(FIXTURES / "mnist", directory)
    labels_path = directory / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels_path.read_bytes()))
    content[8 + 150] = 10
    labels_path.write_bytes(gzip.compress(bytes(content), mtime=0))
    digests = {
        path.name.removesuffix(".gz"): sha256_of_idx(path) for path in directory.glob("*.gz")
    }
    (directory / MANIFEST_NAME).write_text(format_manifest(digests))
    return directory


def test_reader_error_writes_nothing(tmp_path: Path) -> None:
    source = copy_with_bad_label(tmp_path)
    output = tmp_path / "out" / "mnist"
    with pytest.raises(
        IdxFormatError,
        match=r"t10k-labels-idx1-ubyte\.gz: label out of range: .*found 10 at index 150",
    ):
        convert_dataset(source, output, "mnist")
    assert not output.parent.exists()


def test_verification_error_writes_nothing_and_keeps_previous_output(tmp_path: Path) -> None:
    output = tmp_path / "mnist"
    convert_dataset(FIXTURES / "mnist", output, "mnist", train_shards=1)
    before = snapshot(output)
    source = tmp_path / "flipped"
    shutil.copytree(FIXTURES / "mnist", source)
    images_path = source / "train-images-idx3-ubyte.gz"
    content = bytearray(gzip.decompress(images_path.read_bytes()))
    content[1000] ^= 0xFF
    images_path.write_bytes(gzip.compress(bytes(content), mtime=0))
    with pytest.raises(DataIntegrityError, match=r"train-images-idx3-ubyte\.gz: expected sha256"):
        convert_dataset(source, output, "mnist", train_shards=1)
    assert snapshot(output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flipped", "mnist"]


def test_write_split_refuses_existing_shards_and_bad_shard_counts(tmp_path: Path) -> None:
    images, labels = fixture_split("mnist", "test")
    write_split(images[:10], labels[:10], tmp_path / "split", 2)
    with pytest.raises(FileExistsError, match=r"already holds \.tfrecord files"):
        write_split(images[:10], labels[:10], tmp_path / "split", 2)
    with pytest.raises(ValueError, match=r"expected at most 10 shards for 10 examples, found 11"):
        write_split(images[:10], labels[:10], tmp_path / "other", 11)
    with pytest.raises(ValueError, match=r"expected at least 1 shard, found 0"):
        write_split(images[:10], labels[:10], tmp_path / "other", 0)


def test_convert_rejects_bad_shard_counts_before_writing(tmp_path: Path) -> None:
    output = tmp_path / "mnist"
    with pytest.raises(ValueError, match=r"train_shards: expected at least 1 shard, found 0"):
        convert_dataset(FIXTURES / "mnist", output, "mnist", train_shards=0)
    with pytest.raises(ValueError, match=r"test split: expected at most 200 shards for 200"):
        convert_dataset(FIXTURES / "mnist", output, "mnist", test_shards=201)
    with pytest.raises(ValueError, match=r"validation split: expected at most 25 shards for 25"):
        convert_dataset(FIXTURES / "mnist", output, "mnist", validation_shards=26)
    assert list(tmp_path.iterdir()) == []
