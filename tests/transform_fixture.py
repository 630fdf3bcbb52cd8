"""A real Transform output for tests that export models: ``preprocessing_fn``
analysed by tft_beam over a few raw examples, the transform_fn written with
WriteTransformFn and the raw schema beside it, as the TFX Transform component does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

from ingest.convert import image_to_example
from trainer.transform import IMAGE_KEY, LABEL_KEY, preprocessing_fn

# What the pipeline's SchemaGen infers for ExampleGen's records.
RAW_FEATURE_SPEC = {
    IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
    LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64),
}


def build_transform_output(
    root: Path, images: np.ndarray, labels: np.ndarray, count: int = 8
) -> tft.TFTransformOutput:
    raw_metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC)
    )
    rows = [{IMAGE_KEY: [images[i].tobytes()], LABEL_KEY: [int(labels[i])]} for i in range(count)]
    output_dir = root / "transform_output"
    with tft_beam.Context(temp_dir=str(root / "tft_tmp")):
        transform_fn = (rows, raw_metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(output_dir))
    metadata_io.write_metadata(
        raw_metadata, str(output_dir / tft.TFTransformOutput.RAW_METADATA_DIR)
    )
    return tft.TFTransformOutput(str(output_dir))


def write_split_records(
    root: Path, images: np.ndarray, labels: np.ndarray, splits: dict[str, range]
) -> dict[str, list[str]]:
    """Each split's rows of the fixture as one TFRecord file of ExampleGen-style
    Examples under ``root``: {split: [path]}, the file patterns the trainer reads."""
    files = {}
    for name, rows in splits.items():
        path = str(root / f"{name}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in rows:
                writer.write(image_to_example(images[i], int(labels[i])).SerializeToString())
        files[name] = [path]
    return files
