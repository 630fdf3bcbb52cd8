"""pipeline/monitor.py's decoding of logged requests, signature by signature, without a
server: the images come back as the uint8 pixels the client meant, and the class is
the argmax of what the model answered."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from ingest.convert import image_to_example
from pipeline import monitor

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
SCORES = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], np.float32)


def predict_record(signature: str, key: str, value: np.ndarray, output: str = "probabilities"):
    record = prediction_log_pb2.PredictionLog()
    record.log_metadata.model_spec.signature_name = signature
    record.log_metadata.model_spec.version.value = 4
    record.predict_log.request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    record.predict_log.response.outputs[output].CopyFrom(tf.make_tensor_proto(SCORES))
    return record


@pytest.mark.parametrize(
    ("signature", "value", "output"),
    [
        ("predict_pixels_uint8", IMAGES, "probabilities"),
        ("predict_pixels", IMAGES.astype(np.float32)[..., None], "probabilities"),
        ("predict_images", IMAGES.reshape(2, 784).astype(np.float32) / 255.0, "scores"),
    ],
)
def test_pixel_signatures_decode_to_the_clients_pixels(signature, value, output):
    images, predicted, name = monitor.decode_record(
        predict_record(signature, "images", value, output)
    )
    np.testing.assert_array_equal(images, IMAGES.reshape(2, 784))
    assert predicted.tolist() == [1, 0] and name == signature


def test_examples_decode_from_their_image_feature():
    examples = np.array([image_to_example(i, 3).SerializeToString() for i in IMAGES], dtype=object)
    images, predicted, _ = monitor.decode_record(
        predict_record("serving_default", "examples", examples)
    )
    np.testing.assert_array_equal(images, IMAGES.reshape(2, 784))
    assert predicted.tolist() == [1, 0]


def classification_log(kind: str):
    record = prediction_log_pb2.PredictionLog()
    log = getattr(record, kind)
    for image in IMAGES:
        log.request.input.example_list.examples.add().CopyFrom(image_to_example(image, 0))
    if kind == "classify_log":
        result = log.response.result
    else:
        log.response.results.add().regression_result.regressions.add(value=1.0)
        result = log.response.results.add().classification_result
    for row in SCORES:
        item = result.classifications.add()
        for index, score in enumerate(row):
            item.classes.add(label=str(index), score=float(score))
    return record


@pytest.mark.parametrize("kind", ["classify_log", "multi_inference_log"])
def test_classifications_give_the_top_scored_class(kind):
    images, predicted, _ = monitor.decode_record(classification_log(kind))
    np.testing.assert_array_equal(images, IMAGES.reshape(2, 784))
    assert predicted.tolist() == [1, 0]


def test_records_without_a_class_are_counted_not_decoded():
    regress = prediction_log_pb2.PredictionLog()
    regress.regress_log.request.input.example_list.examples.add()
    only_regression = prediction_log_pb2.PredictionLog()
    only_regression.multi_inference_log.response.results.add().regression_result.SetInParent()
    bad_shape = predict_record("predict_pixels_uint8", "images", IMAGES[:, :27, :27])
    good = predict_record("predict_pixels_uint8", "images", IMAGES)
    for record in (regress, only_regression, bad_shape, good):
        record.log_metadata.timestamp_secs = 100
    window = monitor.read_window([regress, only_regression, bad_shape, good], 100, 101)
    assert (window.records, window.undecodable, window.num_images) == (4, 3, 2)
    assert dict(window.versions) == {4: 2} and dict(window.signatures) == {
        "predict_pixels_uint8": 2
    }
    assert monitor.read_window([good], 101, 200).records == 0
