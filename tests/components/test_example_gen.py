"""The shard-copying ExampleGen executor (components/example_gen/executor.py) run for real
on Beam's DirectRunner over fixture TFRecords: what it writes, and the error it
raises for each kind of bad record."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from components.example_gen.executor import ExampleFormatError, Executor, check_example
from ingest.convert import hold_out_validation, image_to_example, parse_example_bytes, write_split

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _run(input_base: Path, output: Path) -> standard_artifacts.Examples:
    examples = standard_artifacts.Examples()
    examples.uri = str(output)
    config = example_gen_pb2.Input(
        splits=[
            example_gen_pb2.Input.Split(name="train", pattern="train/*"),
            example_gen_pb2.Input.Split(name="validation", pattern="validation/*"),
            example_gen_pb2.Input.Split(name="test", pattern="test/*"),
        ]
    )
    properties = {
        "input_base": str(input_base),
        "input_config": proto_utils.proto_to_json(config),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }
    executor = Executor(Executor.Context(beam_pipeline_args=BEAM_ARGS))
    executor.Do({}, {"examples": [examples]}, properties)
    return examples


def _records(pattern: str) -> list[bytes]:
    files = sorted(tf.io.gfile.glob(pattern))
    return list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())


def _splits(mnist_train, mnist_eval) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The three splits as ingest writes them: train and validation cut from the
    training images, test the official test images (conftest's ``mnist_eval``)."""
    train, validation, _ = hold_out_validation(*mnist_train)
    return {"train": train, "validation": validation, "test": mnist_eval}


def _good_input(root: Path, mnist_train, mnist_eval) -> Path:
    splits = _splits(mnist_train, mnist_eval)
    write_split(*splits["train"], root / "train", num_shards=3)
    write_split(*splits["validation"], root / "validation", num_shards=1)
    write_split(*splits["test"], root / "test", num_shards=1)
    return root


def test_copies_every_record_in_order_as_gzip(tmp_path, mnist_train, mnist_eval):
    source = _good_input(tmp_path / "in", mnist_train, mnist_eval)
    examples = _run(source, tmp_path / "out")

    assert artifact_utils.decode_split_names(examples.split_names) == [
        "train",
        "validation",
        "test",
    ]
    assert examples.get_string_custom_property("file_format") == "tfrecords_gzip"
    assert examples.get_string_custom_property("payload_format") == "FORMAT_TF_EXAMPLE"
    train_files = sorted(p.name for p in (tmp_path / "out" / "Split-train").iterdir())
    assert train_files == [f"data_tfrecord-0000{i}-of-00003.gz" for i in range(3)]
    expected = _splits(mnist_train, mnist_eval)
    assert {split: len(labels) for split, (_, labels) in expected.items()} == {
        "train": 275,
        "validation": 25,
        "test": 200,
    }
    for split, (images, labels) in expected.items():
        copied = [
            parse_example_bytes(record)
            for record in _records(str(tmp_path / "out" / f"Split-{split}" / "*"))
        ]
        assert len(copied) == len(labels)
        np.testing.assert_array_equal(np.stack([image for image, _ in copied]), images)
        assert [label for _, label in copied] == labels.tolist()


def _example(**features: tf.train.Feature) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(*values: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


BAD_RECORDS = {
    "missing image": (_example(label=_int(3)), "feature 'image' is missing"),
    "missing label": (_example(image=_bytes(bytes(784))), "feature 'label' is missing"),
    "wrong image size": (
        _example(image=_bytes(bytes(32 * 32)), label=_int(3)),
        "feature 'image' has 1024 bytes, expected 784 (a 28x28 uint8 image)",
    ),
    "label out of range": (
        _example(image=_bytes(bytes(784)), label=_int(12)),
        "feature 'label' is 12, expected 0..9",
    ),
    "two labels": (
        _example(image=_bytes(bytes(784)), label=_int(1, 2)),
        "feature 'label' must hold one int64 value, found 2 value(s) of type int64_list",
    ),
    "image as floats": (
        _example(
            image=tf.train.Feature(float_list=tf.train.FloatList(value=[0.0] * 784)),
            label=_int(3),
        ),
        "feature 'image' must hold one bytes value of 784 bytes, "
        "found 784 value(s) of type float_list",
    ),
    "not an Example": (b"\xff\xff\xff", "not a serialized tf.train.Example"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_fails_naming_file_record_and_feature(tmp_path, mnist_train, mnist_eval, case):
    source = _good_input(tmp_path / "in", mnist_train, mnist_eval)
    bad_file = source / "train" / "data-00001-of-00003.tfrecord"
    good = list(tf.data.TFRecordDataset(str(bad_file)).as_numpy_iterator())
    record, message = BAD_RECORDS[case]
    with tf.io.TFRecordWriter(str(bad_file)) as writer:
        for serialized in good[:7] + [record] + good[7:]:
            writer.write(serialized)

    with pytest.raises(ExampleFormatError) as raised:
        _run(source, tmp_path / "out")
    error = raised.value
    assert error.path == str(bad_file)
    assert error.index == 7
    assert message in str(error)
    assert str(error).startswith(f"{bad_file}: record 7: ")


def test_truncated_file_is_reported_as_corrupt(tmp_path, mnist_train, mnist_eval):
    source = _good_input(tmp_path / "in", mnist_train, mnist_eval)
    bad_file = source / "test" / "data-00000-of-00001.tfrecord"
    bad_file.write_bytes(bad_file.read_bytes()[:-100])
    with pytest.raises(ExampleFormatError, match="corrupt or truncated TFRecord") as raised:
        _run(source, tmp_path / "out")
    assert raised.value.path == str(bad_file)
    assert raised.value.index == 199  # the last record is the one cut short
    assert "truncated record at" in raised.value.problem
    assert "{{" not in raised.value.problem


def test_split_without_files_names_the_pattern(tmp_path, mnist_train):
    write_split(*mnist_train, tmp_path / "in" / "train", num_shards=1)
    write_split(*mnist_train, tmp_path / "in" / "validation", num_shards=1)
    (tmp_path / "in" / "test").mkdir()
    with pytest.raises(FileNotFoundError, match=r"split 'test': no input files match .*test/\*"):
        _run(tmp_path / "in", tmp_path / "out")


def test_check_example_accepts_the_project_format(mnist_train):
    images, labels = mnist_train
    assert check_example(image_to_example(images[0], int(labels[0])).SerializeToString()) is None
