"""What the served model received, against what it was trained on (``mnist-tfx monitor``).

The server's request logs (``serving/request_log.py``: TF Serving's ``PredictionLog``
records) hold every sampled request with the model's answer. For a time window this
module decodes the images of every signature (raw Examples for ``serving_default`` and
``classify``, uint8 or float pixels for ``predict_pixels*``, [N, 784] / 255 for
``predict_images``), profiles them as the data validator profiles training data
(``components/data_validator/profile.py``: mean intensity, ink fraction, and as the
"label" the class the model predicted), and compares the profile with TFDV's own
comparators:

- **skew**: against the training data of the version that answered (the profile the
  Trainer stored inside it, ``assets.extra/data_contract/train_profile.json``), with
  TFDV's ``skew_comparator`` (training statistics vs serving statistics);
- **drift**: against the previous window of the same length, with ``drift_comparator``.

Per-image features are compared by Jensen-Shannon divergence, the class distribution
by L-infinity distance, against the bounds given (the data validator's defaults).
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from components.data_validator import profile as data_profile

DEFAULT_WINDOW_SECONDS = 3600.0
IMAGE_PIXELS = 784
# Signatures whose float pixels are 0..1 (TF Serving's MNIST example contract); other
# float pixel inputs are 0..255.
UNIT_PIXEL_SIGNATURES = ("predict_images",)
SCORE_OUTPUTS = ("probabilities", "scores")
EXAMPLE_INPUTS = ("examples", "inputs")


@dataclass
class ServedWindow:
    """The decoded requests of one window: images uint8 [N, 784], the class the model
    predicted for each, and what was read."""

    start: float
    end: float
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, IMAGE_PIXELS), np.uint8))
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    versions: collections.Counter = field(default_factory=collections.Counter)
    signatures: collections.Counter = field(default_factory=collections.Counter)
    records: int = 0
    undecodable: int = 0

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    def profile(self) -> data_profile.DataProfile:
        result = data_profile.DataProfile()
        if self.num_images:
            result.add_images(self.images, self.predicted)
        return result


def _images_from_examples(serialized: Iterable[bytes]) -> np.ndarray:
    from tensorflow.core.example import example_pb2

    rows = []
    for raw in serialized:
        feature = example_pb2.Example.FromString(raw).features.feature[data_profile.IMAGE_KEY]
        (value,) = feature.bytes_list.value
        if len(value) != IMAGE_PIXELS:
            raise ValueError(f"an Example's image has {len(value)} bytes, expected 784")
        rows.append(np.frombuffer(value, np.uint8))
    return np.stack(rows) if rows else np.zeros((0, IMAGE_PIXELS), np.uint8)


def _pixels(array: np.ndarray, signature: str) -> np.ndarray:
    """Pixel input of any accepted layout ([N,28,28], [N,28,28,1], [N,784]) as uint8 [N, 784]."""
    rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, -1)
    if rows.shape[1] != IMAGE_PIXELS:
        raise ValueError(f"pixel input of shape {list(array.shape)}, expected 784 per image")
    if rows.dtype == np.uint8:
        return rows
    values = rows.astype(np.float64)
    if signature in UNIT_PIXEL_SIGNATURES:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def decode_record(record) -> tuple[np.ndarray, np.ndarray, str]:
    """(images uint8 [n, 784], predicted class [n], signature) of one PredictionLog;
    ValueError when it holds no image input this project's signatures take."""
    import tensorflow as tf

    kind = record.WhichOneof("log_type")
    signature = record.log_metadata.model_spec.signature_name
    if kind == "predict_log":
        inputs = record.predict_log.request.inputs
        outputs = record.predict_log.response.outputs
        if "images" in inputs:
            images = _pixels(tf.make_ndarray(inputs["images"]), signature)
        else:
            key = next((k for k in EXAMPLE_INPUTS if k in inputs), None)
            if key is None:
                raise ValueError(f"predict inputs {sorted(inputs)} hold no image")
            images = _images_from_examples(tf.make_ndarray(inputs[key]).ravel().tolist())
        key = next((k for k in SCORE_OUTPUTS if k in outputs), None)
        if key is None:
            raise ValueError(f"predict outputs {sorted(outputs)} hold no scores")
        scores = tf.make_ndarray(outputs[key]).reshape(images.shape[0], -1)
        return images, scores.argmax(axis=1).astype(np.int64), signature
    if kind in ("classify_log", "multi_inference_log"):
        log = getattr(record, kind)
        examples = log.request.input.example_list.examples
        images = _images_from_examples(e.SerializeToString() for e in examples)
        if kind == "classify_log":
            result = log.response.result
        else:  # the first classification task's answer
            result = next(
                (r.classification_result for r in log.response.results
                 if r.HasField("classification_result")),
                None,
            )  # fmt: skip
            if result is None:
                raise ValueError("a multi_inference record without a classification task")
        predicted = [
            int(np.argmax([c.score for c in item.classes])) for item in result.classifications
        ]
        return images, np.array(predicted, np.int64), signature
    raise ValueError(f"a {kind} record holds no class prediction")


def read_window(records: Sequence, start: float, end: float) -> ServedWindow:
    """The records logged in [start, end), decoded."""
    window = ServedWindow(start, end)
    images, predicted = [window.images], [window.predicted]
    for record in records:
        if not start <= record.log_metadata.timestamp_secs < end:
            continue
        window.records += 1
        try:
            rows, classes, signature = decode_record(record)
        except ValueError:
            window.undecodable += 1
            continue
        if rows.shape[0] != classes.shape[0]:
            window.undecodable += 1
            continue
        images.append(rows)
        predicted.append(classes)
        window.signatures[signature] += int(rows.shape[0])
        window.versions[record.log_metadata.model_spec.version.value] += int(rows.shape[0])
    window.images = np.concatenate(images)
    window.predicted = np.concatenate(predicted)
    return window


def training_profile(base_path: str, version: int) -> data_profile.DataProfile:
    """The training-data profile a pushed version carries; FileNotFoundError naming it."""
    import tensorflow as tf

    path = os.path.join(str(base_path), str(version), data_profile.CONTRACT_DIR)
    path = os.path.join(path, data_profile.PROFILE_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"version {version} under {base_path} carries no training-data profile ({path}); "
            "expected a version pushed by this pipeline"
        )
    with tf.io.gfile.GFile(path, "r") as handle:
        return data_profile.DataProfile.from_json(handle.read(), path)


@dataclass(frozen=True)
class Finding:
    """One comparison of one feature: skew (vs training) or drift (vs previous window)."""

    kind: str
    feature: str
    measure: str
    distance: float
    bound: float

    @property
    def beyond(self) -> bool:
        return self.distance > self.bound


_MEASURES = {
    "JENSEN_SHANNON_DIVERGENCE": "Jensen-Shannon divergence",
    "L_INFTY": "L-infinity distance",
    "NORMALIZED_ABSOLUTE_DIFFERENCE": "normalized absolute difference",
}


def compare(
    kind: str,
    current: data_profile.DataProfile,
    reference: data_profile.DataProfile,
    max_divergence: float,
    max_class_distance: float,
) -> list[Finding]:
    """TFDV's comparison of ``current`` with ``reference``: ``skew`` (reference = the
    training data, a skew_comparator per feature) or ``drift`` (reference = the
    previous window, a drift_comparator). One finding per feature, in the profile's order."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    schema = data_profile.drift_schema(max_divergence, max_class_distance)
    current_stats = data_profile.to_statistics(current)
    reference_stats = data_profile.to_statistics(reference)
    if kind == "skew":
        for feature in schema.feature:
            feature.skew_comparator.CopyFrom(feature.drift_comparator)
            feature.ClearField("drift_comparator")
        anomalies = tfdv.validate_statistics(
            statistics=reference_stats, schema=schema, serving_statistics=current_stats
        )
    elif kind == "drift":
        anomalies = tfdv.validate_statistics(
            statistics=current_stats, schema=schema, previous_statistics=reference_stats
        )
    else:
        raise ValueError(f"kind must be 'skew' or 'drift', got {kind!r}")
    names = anomalies_pb2.DriftSkewInfo.Measurement.Type
    findings = []
    for info in anomalies.drift_skew_info:
        measurements = info.skew_measurements if kind == "skew" else info.drift_measurements
        for measurement in measurements:
            findings.append(
                Finding(
                    kind,
                    ".".join(info.path.step),
                    _MEASURES.get(names.Name(measurement.type), names.Name(measurement.type)),
                    float(measurement.value),
                    float(measurement.threshold),
                )
            )
    order = [*data_profile.PROFILE_FEATURES, data_profile.LABEL_KEY]
    return sorted(findings, key=lambda f: order.index(f.feature) if f.feature in order else 99)


def describe(finding: Finding) -> str:
    """One line: what was compared, the distance, the bound and the verdict."""
    against = "the training data" if finding.kind == "skew" else "the previous window"
    feature = "predicted class" if finding.feature == data_profile.LABEL_KEY else finding.feature
    verdict = "BEYOND the bound" if finding.beyond else "within the bound"
    return (
        f"{finding.kind}: {feature} vs {against}: {finding.measure} {finding.distance:.4f}, "
        f"bound {finding.bound:g}: {verdict}"
    )


def to_json(findings: Sequence[Finding]) -> list[dict]:
    return [
        {
            "kind": f.kind,
            "feature": f.feature,
            "measure": f.measure,
            "distance": round(f.distance, 6),
            "bound": f.bound,
            "beyond": f.beyond,
        }
        for f in findings
    ]


def dumps(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True)
