"""ExampleGen executor that imports tf.Example TFRecords shard by shard, checking
every record.

TFX's ImportExampleGen hands each record to Beam as its own element and writes it
back through Beam's Python TFRecord sink; on full MNIST that per-element overhead
is 11 to 16 s of the pipeline's budget. This executor keeps the component
(``FileBasedExampleGen`` with its driver, so input fingerprints, spans, versions
and caching behave exactly as for ImportExampleGen) and keeps Beam, but makes
each *input file* one Beam element: a worker streams the file through TF's C++
TFRecord reader and writer into a gzipped output shard. Shards are processed in
parallel when Beam has several workers.

While copying, every record is checked against the dataset's Example format
(``ingest.convert``): a serialized ``tf.Example`` with exactly one
``image`` value of 784 bytes and exactly one int64 ``label`` in 0..9. The first
bad record fails the component with an :class:`ExampleFormatError` naming the
file, the record index, the feature and what was expected versus found, so
nothing downstream runs and nothing is pushed.

The output is what ImportExampleGen writes: ``Split-<name>/data_tfrecord-*.gz``
gzipped TFRecords of serialized tf.Examples, with the artifact's split names,
payload format and file format set the same way.

Lineage is recorded here, when the span is read, not looked up later: the span's
conversion manifest may be gone or replaced by then, and a model must stay traceable
to the exact files it learned from. The artifact gets the custom properties
``dataset``, ``source_sha256`` (JSON: IDX file stem -> sha256 of its uncompressed
bytes) and ``manifest_sha256``, and its directory a copy of the manifest
(``data_lineage.json``), which the Trainer reads into the exported model
(``trainer/export.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import tensorflow as tf
from google.protobuf.message import DecodeError
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from ingest.convert import IMAGE_BYTES, MANIFEST_FILE
from ingest.datasets import IMAGE_KEY, LABEL_KEY, NUM_CLASSES

logger = logging.getLogger(__name__)

SPAN_PROPERTY = "span"  # set by FileBasedExampleGen's driver

OUTPUT_PREFIX = write_split.DEFAULT_TF_RECORD_FILE_NAME
_GZIP = tf.io.TFRecordOptions(compression_type="GZIP")
# In the Examples artifact's directory, beside the Split-<name> directories.
LINEAGE_FILE = "data_lineage.json"
_READ_BATCH = 1024


class ExampleFormatError(ValueError):
    """A record of an input TFRecord file is not a valid MNIST-format tf.Example."""

    def __init__(self, path: str, index: int, problem: str) -> None:
        super().__init__(f"{path}: record {index}: {problem}")
        self.path = path
        self.index = index
        self.problem = problem


def check_example(serialized: bytes) -> str | None:
    """Why ``serialized`` is not a valid Example of this project's format, or None."""
    try:
        example = tf.train.Example.FromString(serialized)
    except DecodeError as error:
        return f"not a serialized tf.train.Example ({error})"
    features = example.features.feature
    if IMAGE_KEY not in features:
        return f"feature '{IMAGE_KEY}' is missing; expected {IMAGE_BYTES} raw uint8 bytes"
    image = features[IMAGE_KEY]
    if image.WhichOneof("kind") != "bytes_list" or len(image.bytes_list.value) != 1:
        return (
            f"feature '{IMAGE_KEY}' must hold one bytes value of {IMAGE_BYTES} bytes, "
            f"found {_describe(image)}"
        )
    size = len(image.bytes_list.value[0])
    if size != IMAGE_BYTES:
        return (
            f"feature '{IMAGE_KEY}' has {size} bytes, expected {IMAGE_BYTES} (a 28x28 uint8 image)"
        )
    if LABEL_KEY not in features:
        return f"feature '{LABEL_KEY}' is missing; expected one int64 in 0..{NUM_CLASSES - 1}"
    label = features[LABEL_KEY]
    if label.WhichOneof("kind") != "int64_list" or len(label.int64_list.value) != 1:
        return f"feature '{LABEL_KEY}' must hold one int64 value, found {_describe(label)}"
    value = label.int64_list.value[0]
    if not 0 <= value < NUM_CLASSES:
        return f"feature '{LABEL_KEY}' is {value}, expected 0..{NUM_CLASSES - 1}"
    return None


def _describe(feature: tf.train.Feature) -> str:
    kind = feature.WhichOneof("kind")
    if kind is None:
        return "an empty feature"
    return f"{len(getattr(feature, kind).value)} value(s) of type {kind}"


def _compression(path: str) -> str:
    return "GZIP" if path.endswith(".gz") else ""


def copy_shard(task: tuple[str, str]) -> Iterator[int]:
    """Copy one input TFRecord file to a gzipped output shard, checking each record.
    Yields the number of records copied."""
    source, destination = task
    count = 0
    dataset = tf.data.TFRecordDataset(source, compression_type=_compression(source))
    with tf.io.TFRecordWriter(destination, options=_GZIP) as writer:
        try:
            # Batches keep tf.data's per-element cost off the 70,000 records.
            for batch in dataset.batch(_READ_BATCH).as_numpy_iterator():
                for serialized in batch:
                    problem = check_example(serialized)
                    if problem:
                        raise ExampleFormatError(source, count, problem)
                    writer.write(serialized)
                    count += 1
        except tf.errors.DataLossError as error:
            index = _first_unreadable(dataset, count)
            raise ExampleFormatError(
                source, index, f"corrupt or truncated TFRecord ({_short(error.message)})"
            ) from None
    yield count


def _find_cause(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _first_unreadable(dataset: tf.data.Dataset, start: int) -> int:
    """Index of the first record that cannot be read, reading one at a time from start."""
    index = start
    try:
        for _ in dataset.skip(start):
            index += 1
    except tf.errors.DataLossError:
        pass
    return index


def _short(message: str) -> str:
    """TF's DataLossError text without the op and device decorations."""
    return message.split("}}")[-1].split("[Op:")[0].strip()


class Executor(base_beam_executor.BaseBeamExecutor):
    """Imports each split's TFRecord files one Beam element per file (see module doc)."""

    def Do(  # noqa: N802 (TFX's executor interface)
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config
        )
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config
        )
        file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY)
        if file_format not in (None, example_gen_pb2.FORMAT_TFRECORDS_GZIP):
            raise ValueError(
                "this ExampleGen writes gzipped TFRecords only, "
                f"not output_file_format={file_format}"
            )
        if output_config.split_config.splits:
            raise ValueError(
                "this ExampleGen keeps the input splits as they are; "
                "output_config.split_config must be empty"
            )
        examples = output_dict[standard_component_specs.EXAMPLES_KEY]
        artifact = artifact_utils.get_single_instance(examples)
        split_names = example_gen_utils.generate_output_split_names(input_config, output_config)
        artifact.split_names = artifact_utils.encode_split_names(split_names)

        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        tasks: list[tuple[str, str]] = []
        for split in input_config.splits:
            pattern = os.path.join(input_base, split.pattern)
            sources = sorted(tf.io.gfile.glob(pattern))
            if not sources:
                raise FileNotFoundError(f"split '{split.name}': no input files match {pattern!r}")
            split_dir = artifact_utils.get_split_uri(examples, split.name)
            tf.io.gfile.makedirs(split_dir)
            for index, source in enumerate(sources):
                name = f"{OUTPUT_PREFIX}-{index:05d}-of-{len(sources):05d}.gz"
                tasks.append((source, os.path.join(split_dir, name)))

        logger.info("importing %d files into %d splits", len(tasks), len(split_names))
        try:
            with self._make_beam_pipeline() as pipeline:
                _ = (
                    pipeline
                    | "Files" >> beam.Create(tasks)
                    | "Reshuffle" >> beam.Reshuffle()
                    | "CopyShards" >> beam.FlatMap(copy_shard)
                    | "Total" >> beam.CombineGlobally(sum)
                    | "Log" >> beam.Map(lambda total: logger.info("imported %d examples", total))
                )
        except Exception as error:
            # Beam re-raises a worker's exception wrapped in its own; give the
            # caller the ExampleFormatError (file, record, problem) itself.
            cause = _find_cause(error, ExampleFormatError)
            if cause is None:
                raise
            raise cause from None

        record_data_lineage(artifact, input_base, input_config, exec_properties.get(SPAN_PROPERTY))
        payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
        for output in examples:
            if payload_format:
                examples_utils.set_payload_format(output, payload_format)
            examples_utils.set_file_format(
                output, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP)
            )


def _span_directory(input_base: str, input_config: example_gen_pb2.Input) -> str | None:
    """The one directory all split patterns resolved into (``span-<N>``), or None."""
    heads = {split.pattern.split("/", 1)[0] for split in input_config.splits}
    if len(heads) != 1 or any("/" not in split.pattern for split in input_config.splits):
        return None
    return os.path.join(input_base, heads.pop())


def record_data_lineage(
    artifact: Any, input_base: str, input_config: example_gen_pb2.Input, span: int | None
) -> dict[str, Any] | None:
    """Record where the examples came from on ``artifact``: the span's manifest,
    copied into the artifact's directory with the span and data root, and the
    dataset and source files' sha256 as custom properties. Returns the record, or
    None (with a warning) when the input has no manifest to record."""
    directory = _span_directory(input_base, input_config)
    manifest_path = os.path.join(directory, MANIFEST_FILE) if directory else None
    if manifest_path is None or not tf.io.gfile.exists(manifest_path):
        logger.warning("no %s beside the input; no data lineage recorded", MANIFEST_FILE)
        return None
    with tf.io.gfile.GFile(manifest_path, "rb") as f:
        raw = f.read()
    manifest = json.loads(raw)
    record = {
        "span": span,
        "span_dir": directory,
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "manifest": manifest,
    }
    with tf.io.gfile.GFile(os.path.join(artifact.uri, LINEAGE_FILE), "w") as f:
        f.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
    artifact.set_string_custom_property("dataset", str(manifest.get("dataset", "")))
    artifact.set_string_custom_property(
        "source_sha256", json.dumps(manifest.get("source_sha256", {}), sort_keys=True)
    )
    artifact.set_string_custom_property("manifest_sha256", record["manifest_sha256"])
    return record
