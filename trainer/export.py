"""The serving export: a SavedModel that TF Serving loads, with the Transform
graph inside every signature so clients send raw data, never scaled pixels.

Signatures (all return ``classes`` int64 [N], ``probabilities`` float32 [N, 10]
and ``class_names`` string [N]):

* ``serving_default``: ``examples``, serialized ``tf.Example`` strings [N] with the
  raw ``image`` bytes feature (what ExampleGen stored; what the Evaluator feeds);
* ``predict_images``: ``images``, float32 pixels 0..255, shape [N, 28, 28] or [N, 784]
  (TF Serving's REST API turns JSON numbers into this);
* ``predict_images_uint8``: the same for uint8 pixels (gRPC clients holding uint8 arrays).

One more signature, ``classify``, serves TF Serving's Classify API: input ``inputs``
(serialized ``tf.Example`` strings [N]), outputs ``classes`` (the ten class names,
string [N, 10]) and ``scores`` (their probabilities, float32 [N, 10]); its
``method_name`` is set to ``tensorflow/serving/classify`` in the written
``saved_model.pb`` (see ``mark_classify_signature``).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from components.data_validator import profile as data_profile
from trainer.transform import IMAGE_KEY, LABEL_KEY, NUM_PIXELS

CLASSIFY_SIGNATURE = "classify"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
SERVING_SIGNATURES = (
    "serving_default",
    "predict_images",
    "predict_images_uint8",
    CLASSIFY_SIGNATURE,
)

# Files TF Serving ignores but carries with the version: assets.extra/.
ASSETS_EXTRA = "assets.extra"
VERIFICATION_FILE = "expected_predictions.json"
WARMUP_FILE = "tf_serving_warmup_requests"
VERIFICATION_EXAMPLES = 16

# Byte string of each value 0..255, to turn pixels back into the raw image bytes
# the Transform graph expects.
_BYTE_VALUES = [bytes([value]) for value in range(256)]


def pixels_to_image_bytes(images: tf.Tensor) -> tf.Tensor:
    """Pixels 0..255, [N, 28, 28] or [N, 784] (any real or integer dtype), to raw bytes [N]."""
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    rank = tf.rank(images)
    # Padded so that any rank (an unbatched [784], a [N, 28, 28, 1]) reaches the
    # message below instead of failing inside the comparison.
    dims = tf.concat([shape, tf.zeros([3], tf.int32)], axis=0)[:3]
    well_shaped = tf.logical_or(
        tf.logical_and(tf.equal(rank, 2), tf.equal(dims[1], NUM_PIXELS)),
        tf.logical_and(
            tf.equal(rank, 3), tf.logical_and(tf.equal(dims[1], 28), tf.equal(dims[2], 28))
        ),
    )
    checks = [
        tf.debugging.Assert(
            well_shaped, ["images: expected shape [N, 28, 28] or [N, 784], got", shape]
        )
    ]
    if images.dtype != tf.uint8:
        values = tf.cast(images, tf.float32)
        checks.append(
            tf.debugging.Assert(
                tf.logical_and(tf.reduce_all(values >= 0.0), tf.reduce_all(values <= 255.0)),
                [
                    "images: expected pixel values in 0..255 (raw, not scaled), got min/max",
                    tf.reduce_min(values),
                    tf.reduce_max(values),
                ],
            )
        )
    with tf.control_dependencies(checks):
        flat = tf.reshape(images, [-1, NUM_PIXELS])
    indices = tf.cast(tf.round(tf.cast(flat, tf.float32)), tf.int32)
    table = tf.constant(_BYTE_VALUES)
    return tf.strings.reduce_join(tf.gather(table, indices), axis=1)


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

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict_raw(tf.io.parse_example(examples, self._raw_spec))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="images")])
    def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict_pixels(images)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    def serve_images_uint8(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._predict_pixels(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_examples(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        # TF Serving's Classify API reads a (label, score) pair per class from the
        # string ``classes`` and float ``scores`` outputs, both [N, K].
        predictions = self._predict_raw(tf.io.parse_example(inputs, self._raw_spec))
        scores = predictions["probabilities"]
        labels = tf.tile(self._class_names[None, :], [tf.shape(scores)[0], 1])
        return {"classes": labels, "scores": scores}

    def _predict_pixels(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        image_bytes = pixels_to_image_bytes(images)
        # The Transform graph was traced on the parsed-example shape [N, 1].
        return self._predict_raw({IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})


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
    ``tf_serving_warmup_requests`` (PredictionLog records of Predict requests on
    ``serving_default``), which TF Serving replays before it serves a new version.
    """
    module = ServingModule(model, tft_output, class_names)
    signatures = {
        "serving_default": module.serve_examples.get_concrete_function(),
        "predict_images": module.serve_images.get_concrete_function(),
        "predict_images_uint8": module.serve_images_uint8.get_concrete_function(),
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
        "signature": "serving_default",
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


def write_warmup_requests(saved_model_dir: str, examples: list[bytes]) -> str:
    """TF Serving's warm-up file: one Predict request on ``serving_default`` per example."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(saved_model_dir, ASSETS_EXTRA, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name="serving_default")
            )
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example], tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
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
