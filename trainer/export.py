"""The serving export: a SavedModel that TF Serving loads, with the Transform
graph inside every signature so clients send raw data, never scaled pixels.

Signatures:

* ``serving_default``: ``examples``, serialized ``tf.Example`` strings [N] with the
  raw ``image`` bytes feature (what ExampleGen stored; what the Evaluator feeds);
  outputs ``classes`` int64 [N], ``probabilities`` float32 [N, 10] and
  ``class_names`` string [N];
* ``predict_images``: TF Serving's MNIST example contract (``mnist_client.py``):
  ``images``, float32 [N, 784] with pixels in [0, 1] (uint8 pixels / 255); outputs
  ``scores`` float32 [N, 10] (the class probabilities, in class order) and
  ``classes`` int64 [N];
* ``predict_pixels``: ``images``, float32 pixels 0..255, shape [N, 28, 28] or
  [N, 784] (TF Serving's REST API turns JSON numbers into this); outputs as
  ``serving_default``;
* ``predict_pixels_uint8``: the same for uint8 pixels (gRPC clients holding uint8 arrays);
* ``classify``: TF Serving's Classify API: input ``inputs`` (serialized
  ``tf.Example`` strings [N]), outputs ``classes`` (the ten class names, string
  [N, 10]) and ``scores`` (their probabilities, float32 [N, 10]); its
  ``method_name`` is set to ``tensorflow/serving/classify`` in the written
  ``saved_model.pb`` (see ``mark_classify_signature``).

Every signature checks its input per example inside the exported graph, so TF
Serving itself refuses malformed input with INVALID_ARGUMENT instead of answering
wrongly: an Example whose ``image`` does not hold exactly 784 bytes (the Transform
graph's reshape to [-1, 28, 28, 1] would otherwise accept any multiple of 784, and
one doubled image would give two predictions), a pixel tensor of any other shape
than the signature's, or pixel values outside its range. The pixel inputs are
declared with an unknown shape on purpose: neither TF Serving nor
``tf.saved_model.load`` checks a declared shape, and a declared one would let the
graph optimizer fold the in-graph shape check away.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from components.data_validator import profile as data_profile
from components.example_gen.executor import LINEAGE_FILE
from trainer.transform import IMAGE_KEY, IMAGE_SIZE, LABEL_KEY, NUM_PIXELS

DEFAULT_SIGNATURE = "serving_default"
MNIST_EXAMPLE_SIGNATURE = "predict_images"
PIXEL_SIGNATURE = "predict_pixels"
PIXEL_UINT8_SIGNATURE = "predict_pixels_uint8"
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
SERVING_SIGNATURES = (
    DEFAULT_SIGNATURE,
    MNIST_EXAMPLE_SIGNATURE,
    PIXEL_SIGNATURE,
    PIXEL_UINT8_SIGNATURE,
    CLASSIFY_SIGNATURE,
)
# The output of predict_images that TF Serving's MNIST client reads.
SCORES_KEY = "scores"

# Files TF Serving ignores but carries with the version: assets.extra/.
ASSETS_EXTRA = "assets.extra"
VERIFICATION_FILE = "expected_predictions.json"
WARMUP_FILE = "tf_serving_warmup_requests"
# assets.extra/lineage/sources.json: the data the model learned from (write_training_sources).
LINEAGE_DIR = "lineage"
SOURCES_FILE = "sources.json"
SOURCES_FORMAT_VERSION = 1
VERIFICATION_EXAMPLES = 16

RAW_PIXEL_LAYOUTS = ((IMAGE_SIZE, IMAGE_SIZE), (NUM_PIXELS,))
UNIT_PIXEL_LAYOUTS = ((NUM_PIXELS,),)


def check_example_images(image: tf.Tensor, input_name: str) -> tf.Tensor:
    """The parsed ``image`` feature ([N] or [N, 1] strings), once every example's image
    is known to hold exactly 784 bytes; otherwise InvalidArgumentError naming the first
    bad example's index in ``input_name``, its byte count and the 784 expected."""
    lengths = tf.strings.length(tf.reshape(image, [-1]), unit="BYTE")
    bad = tf.not_equal(lengths, NUM_PIXELS)
    well_formed = tf.logical_not(tf.reduce_any(bad))

    def describe() -> tf.Tensor:
        index = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
        return tf.strings.format(
            f"{input_name}[{{}}]: the {IMAGE_KEY} feature holds {{}} bytes; expected "
            f"{NUM_PIXELS} ({IMAGE_SIZE} x {IMAGE_SIZE} uint8 pixels, one image per example); "
            "{} of {} examples malformed",
            (
                index,
                lengths[index],
                tf.reduce_sum(tf.cast(bad, tf.int32)),
                tf.size(lengths),
            ),
        )

    # The message is only built when needed (an empty batch has no first index). It holds
    # no quotes: the Assert op prints string data C-escaped.
    message = tf.cond(well_formed, lambda: tf.constant(""), describe)
    with tf.control_dependencies([tf.debugging.Assert(well_formed, [message])]):
        return tf.identity(image)


def _check_shape(images: tf.Tensor, layouts: Sequence[tuple[int, ...]]) -> tf.Operation:
    """Assert that ``images`` is [N, *layout] for one of ``layouts``; the error names the
    shapes expected and the one found."""
    shape = tf.shape(images)
    rank = tf.rank(images)
    most = 1 + max(len(layout) for layout in layouts)
    # Padded so that any rank (an unbatched [784], a [N, 28, 28, 1]) reaches the
    # message below instead of failing inside the comparison.
    dims = tf.concat([shape, tf.zeros([most], tf.int32)], axis=0)[:most]
    matches = []
    for layout in layouts:
        match = tf.equal(rank, 1 + len(layout))
        for axis, size in enumerate(layout, start=1):
            match = tf.logical_and(match, tf.equal(dims[axis], size))
        matches.append(match)
    expected = " or ".join(
        "[N, " + ", ".join(str(size) for size in layout) + "]" for layout in layouts
    )
    return tf.debugging.Assert(
        tf.reduce_any(tf.stack(matches)), [f"images: expected shape {expected}, got", shape]
    )


def _check_range(values: tf.Tensor, low: float, high: float, expected: str) -> tf.Operation:
    """Assert every value lies in [low, high] (NaN does not); the error gives min and max."""
    return tf.debugging.Assert(
        tf.logical_and(tf.reduce_all(values >= low), tf.reduce_all(values <= high)),
        [
            f"images: expected pixel values in {expected}, got min/max",
            tf.reduce_min(values),
            tf.reduce_max(values),
        ],
    )


def _bytes_of(pixels: tf.Tensor) -> tf.Tensor:
    """uint8 pixels [N, 784] to raw image bytes [N], row-major: the bytes of row i.

    ``serialize_tensor`` writes a TensorProto whose last field, ``tensor_content``,
    holds the tensor's bytes as they lie in memory, so row i is the 784 bytes at
    ``len - (N - i) * 784``; each row is cut out of that one string. This is a copy of
    the batch's bytes, where looking up one string per pixel and joining 784 of them
    per image took about 0.02 ms per image, 8 % of the whole signature call at the
    batch of 12 the server typically runs under load (measured 2026-11-27).
    """
    pixels = tf.ensure_shape(pixels, [None, NUM_PIXELS])
    rows = tf.shape(pixels)[0]
    serialized = tf.io.serialize_tensor(pixels)
    first = tf.strings.length(serialized) - rows * NUM_PIXELS
    return tf.strings.substr(
        serialized, first + tf.range(rows) * NUM_PIXELS, tf.fill([rows], NUM_PIXELS)
    )


def pixels_to_image_bytes(images: tf.Tensor) -> tf.Tensor:
    """Pixels 0..255, [N, 28, 28] or [N, 784] (any real or integer dtype), to raw bytes [N].
    Float pixels are rounded to the nearest byte."""
    images = tf.convert_to_tensor(images)
    checks = [_check_shape(images, RAW_PIXEL_LAYOUTS)]
    if images.dtype != tf.uint8:
        checks.append(
            _check_range(tf.cast(images, tf.float32), 0.0, 255.0, "0..255 (raw, not scaled)")
        )
    with tf.control_dependencies(checks):
        flat = tf.reshape(images, [-1, NUM_PIXELS])
    if flat.dtype != tf.uint8:
        flat = tf.cast(tf.round(tf.cast(flat, tf.float32)), tf.uint8)
    return _bytes_of(flat)


def unit_pixels_to_image_bytes(images: tf.Tensor) -> tf.Tensor:
    """TF Serving's MNIST input, float pixels in [0, 1] of shape [N, 784] (uint8 / 255), to
    raw bytes [N]: each value is rounded to the nearest of the 256 levels k / 255."""
    images = tf.convert_to_tensor(images, tf.float32)
    checks = [
        _check_shape(images, UNIT_PIXEL_LAYOUTS),
        _check_range(
            images,
            0.0,
            1.0,
            f"[0, 1] (uint8 pixels / 255, as the TF Serving MNIST example sends them; "
            f"send raw 0..255 pixels to {PIXEL_SIGNATURE})",
        ),
    ]
    with tf.control_dependencies(checks):
        flat = tf.reshape(images, [-1, NUM_PIXELS])
    return _bytes_of(tf.cast(tf.round(flat * 255.0), tf.uint8))


class ServingModule(tf.Module):
    """What is saved: the trained model, the Transform layer and the signatures."""

    def __init__(
        self, model: keras.Model, tft_output: tft.TFTransformOutput, class_names: Sequence[str]
    ) -> None:
        super().__init__()
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        raw_spec = dict(tft_output.raw_feature_spec())
        raw_spec.pop(LABEL_KEY, None)
        self._raw_spec = raw_spec
        self._class_names = tf.constant(list(class_names))

    def _predict_raw(self, raw_features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = self.tft_layer(raw_features)
        predictions = self.model({IMAGE_KEY: transformed[IMAGE_KEY]}, training=False)
        classes = tf.cast(predictions["classes"], tf.int64)
        return {
            "classes": classes,
            "probabilities": predictions["probabilities"],
            "class_names": tf.gather(self._class_names, classes),
        }

    def _parse_examples(self, examples: tf.Tensor, input_name: str) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(examples, self._raw_spec)
        features[IMAGE_KEY] = check_example_images(features[IMAGE_KEY], input_name)
        return features

    def _predict_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        # The Transform graph was traced on the parsed-example shape [N, 1].
        return self._predict_raw({IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict_raw(self._parse_examples(examples, "examples"))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="images")])
    def serve_mnist_example(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        predictions = self._predict_image_bytes(unit_pixels_to_image_bytes(images))
        return {SCORES_KEY: predictions["probabilities"], "classes": predictions["classes"]}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="images")])
    def serve_pixels(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict_image_bytes(pixels_to_image_bytes(images))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    def serve_pixels_uint8(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict_image_bytes(pixels_to_image_bytes(images))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_examples(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        # TF Serving's Classify API reads a (label, score) pair per class from the
        # string ``classes`` and float ``scores`` outputs, both [N, K].
        predictions = self._predict_raw(self._parse_examples(inputs, "inputs"))
        scores = predictions["probabilities"]
        labels = tf.tile(self._class_names[None, :], [tf.shape(scores)[0], 1])
        return {"classes": labels, SCORES_KEY: scores}


def export_serving_model(
    model: keras.Model,
    tft_output: tft.TFTransformOutput,
    serving_model_dir: str,
    class_names: Sequence[str],
    verification_examples: Sequence[bytes] = (),
) -> str:
    """Write the SavedModel with its signatures to ``serving_model_dir``.

    With ``verification_examples`` (serialized tf.Examples), also write to
    ``assets.extra/``: the Trainer's own predictions for them, which the Pusher
    compares with what the written SavedModel answers before publishing it
    (``serving/verify.py``), and TF Serving's warm-up file
    ``tf_serving_warmup_requests`` (``write_warmup_requests``), which TF Serving
    replays before it serves a new version.
    """
    module = ServingModule(model, tft_output, class_names)
    signatures = {
        DEFAULT_SIGNATURE: module.serve_examples.get_concrete_function(),
        MNIST_EXAMPLE_SIGNATURE: module.serve_mnist_example.get_concrete_function(),
        PIXEL_SIGNATURE: module.serve_pixels.get_concrete_function(),
        PIXEL_UINT8_SIGNATURE: module.serve_pixels_uint8.get_concrete_function(),
        CLASSIFY_SIGNATURE: module.classify_examples.get_concrete_function(),
    }
    tf.saved_model.save(module, serving_model_dir, signatures=signatures)
    mark_classify_signature(serving_model_dir)
    if verification_examples:
        examples = tf.constant(list(verification_examples))
        expected = module.serve_examples(examples)
        write_verification_set(
            serving_model_dir,
            list(verification_examples),
            expected["probabilities"].numpy().tolist(),
        )
        write_warmup_requests(serving_model_dir, list(verification_examples))
    return serving_model_dir


def write_verification_set(
    saved_model_dir: str, examples: list[bytes], probabilities: list[list[float]]
) -> str:
    """``assets.extra/expected_predictions.json``: examples (base64) and the Trainer's
    probabilities for them."""
    path = os.path.join(saved_model_dir, ASSETS_EXTRA, VERIFICATION_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    content = {
        "signature": DEFAULT_SIGNATURE,
        "examples_b64": [base64.b64encode(example).decode("ascii") for example in examples],
        "probabilities": probabilities,
    }
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(content, f)
    return path


def write_data_contract(
    saved_model_dir: str, schema_path: str | None, profile: data_profile.DataProfile
) -> str:
    """``assets.extra/data_contract/``: the schema the model was trained under
    (``schema.pbtxt``) and the profile of its training data (``train_profile.json``,
    ``components/data_validator/profile.py``). A later run's ExampleValidator holds its data to
    them once this model is blessed."""
    directory = os.path.join(saved_model_dir, data_profile.CONTRACT_DIR)
    tf.io.gfile.makedirs(directory)
    if schema_path:  # a Trainer may run without a schema input
        schema_copy = os.path.join(directory, data_profile.SCHEMA_FILE)
        tf.io.gfile.copy(schema_path, schema_copy, overwrite=True)
    with tf.io.gfile.GFile(os.path.join(directory, data_profile.PROFILE_FILE), "w") as f:
        f.write(profile.to_json())
    return directory


def warmup_logs(examples: list[bytes]) -> list:
    """The PredictionLogs of the warm-up file: a Predict request on ``serving_default`` per
    example, then one request on each other signature with the first example's image in
    that signature's own input form (a Classify request for ``classify``)."""
    from tensorflow_serving.apis import (
        classification_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
    )

    from ingest.convert import parse_example_bytes

    def predict_log(signature: str, key: str, tensor: tf.Tensor | np.ndarray):
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name=signature)
        )
        request.inputs[key].CopyFrom(tf.make_tensor_proto(tensor))
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )

    logs = [
        predict_log(DEFAULT_SIGNATURE, "examples", np.array([example], dtype=object))
        for example in examples
    ]
    if not examples:
        return logs
    pixels, _ = parse_example_bytes(examples[0])
    # Exactly what TF Serving's MNIST client sends: float32 [1, 784], uint8 / 255.
    unit = pixels.reshape(1, NUM_PIXELS).astype(np.float32) * np.float32(1 / 255)
    logs.append(predict_log(MNIST_EXAMPLE_SIGNATURE, "images", unit))
    logs.append(predict_log(PIXEL_SIGNATURE, "images", pixels[None].astype(np.float32)))
    logs.append(predict_log(PIXEL_UINT8_SIGNATURE, "images", pixels[None]))
    classify = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(signature_name=CLASSIFY_SIGNATURE)
    )
    classify.input.example_list.examples.add().ParseFromString(examples[0])
    logs.append(
        prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classify)
        )
    )
    return logs


def write_warmup_requests(saved_model_dir: str, examples: list[bytes]) -> str:
    """TF Serving's warm-up file (``warmup_logs``): every signature answers at least once
    before a version serves, and ``serving_default`` once per example."""
    path = os.path.join(saved_model_dir, ASSETS_EXTRA, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_logs(examples):
            writer.write(log.SerializeToString())
    return path


def mark_classify_signature(saved_model_dir: str) -> None:
    """Set the ``classify`` signature's method_name to TF Serving's classify method.

    TF Serving's Classify API only runs a signature whose method_name is
    ``tensorflow/serving/classify``, but TF2's ``tf.saved_model.save`` writes
    ``tensorflow/serving/predict`` for every signature and has no option to say
    otherwise, so the written ``saved_model.pb`` is edited in place. The
    fingerprint written next to it holds a checksum of that file and is rewritten
    to match. ``tf.saved_model.load`` ignores method names, so nothing else changes.
    """
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model import pywrap_saved_model

    pb_path = os.path.join(saved_model_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(pb_path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if CLASSIFY_SIGNATURE in meta_graph.signature_def:
            meta_graph.signature_def[CLASSIFY_SIGNATURE].method_name = CLASSIFY_METHOD_NAME
    with tf.io.gfile.GFile(pb_path, "wb") as f:
        f.write(saved_model.SerializeToString(deterministic=True))
    fingerprint_path = os.path.join(saved_model_dir, "fingerprint.pb")
    if tf.io.gfile.exists(fingerprint_path):
        fingerprint = pywrap_saved_model.fingerprinting.CreateFingerprintDef(saved_model_dir)
        with tf.io.gfile.GFile(fingerprint_path, "wb") as f:
            f.write(fingerprint)


def examples_artifact_dirs(file_patterns: Sequence[str]) -> list[str]:
    """The Examples artifact directories behind the Trainer's file patterns
    (``<artifact>/Split-<name>/*``: the parent of the ``Split-`` directory), in order,
    each once."""
    found: list[str] = []
    for pattern in file_patterns:
        parts = pattern.replace("\\", "/").split("/")
        split_at = [i for i, part in enumerate(parts) if part.startswith("Split-")]
        if not split_at:
            raise ValueError(
                f"Trainer file pattern {pattern!r}: expected <examples artifact>/Split-<name>/..."
            )
        directory = "/".join(parts[: split_at[-1]])
        if directory not in found:
            found.append(directory)
    return found


def training_sources(file_patterns: Sequence[str]) -> list[dict]:
    """Per Examples artifact the Trainer read: the dataset, span, the source IDX
    files' sha256 and the manifest's sha256, as ExampleGen recorded them when it
    imported the span (``components/example_gen/executor.py``)."""
    sources = []
    for directory in examples_artifact_dirs(file_patterns):
        path = os.path.join(directory, LINEAGE_FILE)
        entry: dict = {"examples_uri": directory}
        if not tf.io.gfile.exists(path):
            entry["recorded"] = False  # imported before lineage was recorded
            sources.append(entry)
            continue
        with tf.io.gfile.GFile(path, "r") as f:
            record = json.load(f)
        manifest = record.get("manifest", {})
        entry.update(
            recorded=True,
            dataset=manifest.get("dataset"),
            span=record.get("span"),
            source_sha256=dict(manifest.get("source_sha256", {})),
            manifest_sha256=record.get("manifest_sha256"),
            counts=dict(manifest.get("counts", {})),
        )
        if manifest.get("train_slice") is not None:
            entry["train_slice"] = manifest["train_slice"]
        sources.append(entry)
    return sorted(sources, key=lambda e: (e.get("span") is None, e.get("span") or 0))


def write_training_sources(saved_model_dir: str, file_patterns: Sequence[str]) -> str:
    """``assets.extra/lineage/sources.json``: ``training_sources`` of the Trainer's
    files, carried inside the model, so the Pusher can record at push time which
    files the pushed version learned from, whatever happens to the spans later."""
    path = os.path.join(saved_model_dir, ASSETS_EXTRA, LINEAGE_DIR, SOURCES_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    content = {
        "format_version": SOURCES_FORMAT_VERSION,
        "sources": training_sources(file_patterns),
    }
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(content, indent=2, sort_keys=True) + "\n")
    return path
