"""What a report is made from, and how it is read from a run's TFX and TFMA outputs.

The data classes (``EvalPredictions``, ``TfmaAccuracy``, ``Threshold``, ``Gate``,
``RunFacts``, ``ReportData``) and the readers: the serving signature run over the
test split (``predict_split``), the Trainer's ``training_stats.json``, and the
Evaluator's eval config, metrics (``tfma.load_metrics``) and validation result.
TensorFlow and TFMA are imported inside the readers, so the data classes need only
numpy.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.datasets import IMAGE_HEIGHT, IMAGE_KEY, IMAGE_WIDTH, LABEL_KEY

logger = logging.getLogger(__name__)

ACCURACY_METRIC = "sparse_categorical_accuracy"
EXAMPLE_COUNT_METRIC = "example_count"
SERVING_SIGNATURE = "serving_default"
TRAINING_STATS_FILE = "training_stats.json"

_PREDICT_BATCH = 1000


@dataclass(frozen=True)
class EvalPredictions:
    """The serving signature's answers on the test split, in the split's record order."""

    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # int64 [N]
    probabilities: np.ndarray  # float32 [N, 10]

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TfmaAccuracy:
    """Accuracy overall and per true class, as the Evaluator's TFMA wrote it."""

    model_name: str
    overall: float | None
    example_count: int | None
    per_class: dict[int, float]
    per_class_count: dict[int, int]


@dataclass(frozen=True)
class Threshold:
    """One threshold of the eval config, with TFMA's verdict on it."""

    slice: str  # "overall" or "label=3"
    label: int | None
    metric: str
    lower_bound: float | None = None
    upper_bound: float | None = None
    # Candidate minus baseline must be >= this (higher is better) or <= it (lower is better).
    change_absolute: float | None = None
    change_relative: float | None = None
    change_direction: str | None = None
    # Checked against a baseline; change thresholds are skipped when there is none.
    change_checked: bool = False
    value: float | None = None
    passed: bool | None = None
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gate:
    """The Evaluator's blessing decision and what it was based on."""

    validation_ok: bool | None
    has_baseline: bool
    thresholds: tuple[Threshold, ...]
    failures: tuple[str, ...]
    missing_slices: tuple[str, ...] = ()


@dataclass
class RunFacts:
    """What the report states about the run besides the figures."""

    dataset: str
    class_names: list[str]
    model: str
    hparams: dict[str, Any]
    example_counts: dict[str, int] = field(default_factory=dict)
    blessed: bool | None = None
    pushed: bool = False
    pushed_version: str | None = None
    pushed_path: str | None = None
    push_reused_version: bool = False
    # pipeline, run_id, node, execution_id, input_artifact_ids, baseline_model_id
    mlmd: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportData:
    """Everything one report is made from."""

    facts: RunFacts
    predictions: EvalPredictions
    tfma: TfmaAccuracy
    gate: Gate
    training: dict[str, Any] | None = None


def _tfrecord_files(directory: str) -> list[str]:
    import tensorflow as tf

    files = sorted(
        path
        for path in tf.io.gfile.glob(os.path.join(directory, "*"))
        if not tf.io.gfile.isdir(path)
    )
    if not files:
        raise FileNotFoundError(f"{directory}: no TFRecord files in the split to predict")
    return files


def predict_split(
    split_dir: str, saved_model_dir: str, batch_size: int = _PREDICT_BATCH
) -> EvalPredictions:
    """Run the SavedModel's ``serving_default`` signature over every serialized
    tf.Example of ``split_dir`` (TFRecords, gzipped when named ``*.gz``), in file
    order; the examples hold ``image`` (784 raw bytes) and ``label`` (int64)."""
    import tensorflow as tf

    files = _tfrecord_files(split_dir)
    compression = "GZIP" if files[0].endswith(".gz") else ""
    records = tf.data.TFRecordDataset(files, compression_type=compression).batch(batch_size)
    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    serve = tf.saved_model.load(saved_model_dir).signatures[SERVING_SIGNATURE]
    images, labels, probabilities = [], [], []
    for batch in records:
        parsed = tf.io.parse_example(batch, spec)
        pixels = tf.io.decode_raw(parsed[IMAGE_KEY], tf.uint8).numpy()
        images.append(pixels.reshape(-1, IMAGE_HEIGHT, IMAGE_WIDTH))
        labels.append(parsed[LABEL_KEY].numpy())
        probabilities.append(serve(examples=batch)["probabilities"].numpy())
    return EvalPredictions(
        images=np.concatenate(images),
        labels=np.concatenate(labels).astype(np.int64),
        probabilities=np.concatenate(probabilities).astype(np.float32),
    )


def read_training_stats(model_run_dir: str) -> dict[str, Any] | None:
    """The Trainer's ``training_stats.json`` (per-epoch ``history`` and throughput), if any."""
    import tensorflow as tf

    path = os.path.join(model_run_dir, TRAINING_STATS_FILE)
    if not tf.io.gfile.exists(path):
        logger.warning("no %s: the report has no training curves", path)
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def read_eval_config(evaluation_dir: str) -> Any:
    """The EvalConfig the Evaluator ran with (after TFMA filled in its defaults)."""
    from tensorflow_model_analysis.writers import eval_config_writer

    eval_config, _, _, _ = eval_config_writer.load_eval_run(evaluation_dir)
    if eval_config is None:
        raise FileNotFoundError(f"{evaluation_dir}: no eval_config.json from the Evaluator")
    return eval_config


def candidate_model_name(eval_config: Any) -> str:
    """The name TFMA filed the evaluated model's metrics under: 'candidate' when the
    Evaluator had a baseline, '' when it evaluated one model."""
    names = [spec.name for spec in eval_config.model_specs if not spec.is_baseline]
    return names[0] if names else ""


def _slice_label(slice_key: Any) -> tuple[bool, int | None]:
    """(is the overall slice, the label of a single ``label`` slice or None)."""
    keys = list(slice_key.single_slice_keys)
    if not keys:
        return True, None
    if len(keys) != 1 or keys[0].column != LABEL_KEY:
        return False, None
    key = keys[0]
    kind = key.WhichOneof("kind")
    if kind == "int64_value":
        return False, int(key.int64_value)
    if kind == "bytes_value" and key.bytes_value.isdigit():
        return False, int(key.bytes_value)
    if kind == "float_value":
        return False, int(key.float_value)
    return False, None


def read_tfma_accuracy(evaluation_dir: str, model_name: str) -> TfmaAccuracy:
    """Overall and per-class ``sparse_categorical_accuracy`` and ``example_count`` of
    ``model_name``, from the Evaluator's metrics files (``tfma.load_metrics``)."""
    import tensorflow_model_analysis as tfma

    overall, total = None, None
    per_class: dict[int, float] = {}
    counts: dict[int, int] = {}
    for metrics in tfma.load_metrics(evaluation_dir):
        is_overall, label = _slice_label(metrics.slice_key)
        if not is_overall and label is None:
            continue
        for entry in metrics.metric_keys_and_values:
            key = entry.key
            if key.is_diff or key.model_name != model_name or key.HasField("sub_key"):
                continue
            if key.HasField("example_weighted") and key.example_weighted.value:
                continue
            value = entry.value.double_value.value
            if key.name == ACCURACY_METRIC:
                if is_overall:
                    overall = value
                else:
                    per_class[label] = value
            elif key.name == EXAMPLE_COUNT_METRIC:
                if is_overall:
                    total = int(round(value))
                else:
                    counts[label] = int(round(value))
    if overall is None:
        raise LookupError(
            f"{evaluation_dir}: no overall {ACCURACY_METRIC} for model {model_name!r} "
            "in the Evaluator's metrics"
        )
    return TfmaAccuracy(
        model_name=model_name,
        overall=overall,
        example_count=total,
        per_class=dict(sorted(per_class.items())),
        per_class_count=dict(sorted(counts.items())),
    )


def _spec_slice(slicing_spec: Any) -> tuple[str, int | None]:
    values = dict(slicing_spec.feature_values)
    if not values and not slicing_spec.feature_keys:
        return "overall", None
    if list(values) == [LABEL_KEY] and not slicing_spec.feature_keys:
        return f"{LABEL_KEY}={values[LABEL_KEY]}", int(values[LABEL_KEY])
    parts = [f"{k}={v}" for k, v in sorted(values.items())]
    parts += [f"{k}=*" for k in slicing_spec.feature_keys]
    return ", ".join(parts), None


def _failure_text(failure: Any, where: str) -> str:
    value = failure.metric_value.double_value.value
    threshold = failure.metric_threshold
    name = failure.metric_key.name
    if failure.metric_key.is_diff:
        change = threshold.change_threshold
        bound = change.absolute.value if change.HasField("absolute") else change.relative.value
        return f"{where}: {name} changed by {value:+.4f} against the baseline; allowed {bound:+.4g}"
    value_threshold = threshold.value_threshold
    if value_threshold.HasField("lower_bound") and value < value_threshold.lower_bound.value:
        floor = value_threshold.lower_bound.value
        return f"{where}: {name} {value:.4f} is below the floor {floor:g}"
    if value_threshold.HasField("upper_bound") and value > value_threshold.upper_bound.value:
        ceiling = value_threshold.upper_bound.value
        return f"{where}: {name} {value:.4f} is above the ceiling {ceiling:g}"
    return f"{where}: {name} {value:.4f} failed its threshold"


def _threshold_bounds(threshold: Any) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if threshold.HasField("value_threshold"):
        value = threshold.value_threshold
        if value.HasField("lower_bound"):
            bounds["lower_bound"] = value.lower_bound.value
        if value.HasField("upper_bound"):
            bounds["upper_bound"] = value.upper_bound.value
    if threshold.HasField("change_threshold"):
        change = threshold.change_threshold
        if change.HasField("absolute"):
            bounds["change_absolute"] = change.absolute.value
        if change.HasField("relative"):
            bounds["change_relative"] = change.relative.value
        directions = change.DESCRIPTOR.fields_by_name["direction"].enum_type
        name = directions.values_by_number[change.direction].name
        bounds["change_direction"] = name.lower().replace("_", " ")
    return bounds


def _configured_thresholds(eval_config: Any) -> list[tuple[str, int | None, str, Any]]:
    """(slice, label, metric name, MetricThreshold) for every threshold of the config."""
    found = []
    for metrics_spec in eval_config.metrics_specs:
        for metric in metrics_spec.metrics:
            name = _metric_name(metric.class_name)
            if metric.HasField("threshold"):
                found.append(("every slice", None, name, metric.threshold))
            for per_slice in metric.per_slice_thresholds:
                for slicing_spec in per_slice.slicing_specs:
                    where, label = _spec_slice(slicing_spec)
                    found.append((where, label, name, per_slice.threshold))
    return found


def _metric_name(class_name: str) -> str:
    """TFMA's metric name for a metric class: the snake_case of the class name,
    e.g. SparseCategoricalAccuracy -> sparse_categorical_accuracy."""
    out = []
    for index, char in enumerate(class_name):
        if char.isupper() and index:
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def _load_validation(evaluation_dir: str) -> Any | None:
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    # The Evaluator writes no validation result when no threshold is configured.
    if not tf.io.gfile.glob(os.path.join(evaluation_dir, "validations*")):
        return None
    return tfma.load_validation_result(evaluation_dir)


def read_gate(evaluation_dir: str, eval_config: Any, tfma_accuracy: TfmaAccuracy) -> Gate:
    """Every threshold of ``eval_config`` with TFMA's value and verdict on it, from
    the Evaluator's validation result."""
    has_baseline = any(spec.is_baseline for spec in eval_config.model_specs)
    validation = _load_validation(evaluation_dir)
    failed: dict[tuple[str, str], list[str]] = {}
    texts: list[str] = []
    missing: list[str] = []
    if validation is not None:
        for per_slice in validation.metric_validations_per_slice:
            is_overall, label = _slice_label(per_slice.slice_key)
            where = "overall" if is_overall else f"{LABEL_KEY}={label}"
            for failure in per_slice.failures:
                text = _failure_text(failure, where)
                failed.setdefault((where, failure.metric_key.name), []).append(text)
                texts.append(text)
        missing = [_spec_slice(spec)[0] for spec in validation.missing_slices]
        texts += [f"slice {name} named in a threshold had no examples" for name in missing]

    thresholds = []
    for where, label, metric, threshold in _configured_thresholds(eval_config):
        if where == "every slice":
            found = [t for (_, name), ts in failed.items() if name == metric for t in ts]
        else:
            found = list(failed.get((where, metric), []))
        if where in missing:
            found.append(f"slice {where} had no examples")
        value = None
        if metric == ACCURACY_METRIC and where == "overall":
            value = tfma_accuracy.overall
        elif metric == ACCURACY_METRIC:
            value = tfma_accuracy.per_class.get(label)
        bounds = _threshold_bounds(threshold)
        thresholds.append(
            Threshold(
                slice=where,
                label=label,
                metric=metric,
                **bounds,
                change_checked="change_direction" in bounds and has_baseline,
                value=value,
                passed=None if validation is None else not found,
                failures=tuple(found),
            )
        )
    return Gate(
        validation_ok=None if validation is None else bool(validation.validation_ok),
        has_baseline=has_baseline,
        thresholds=tuple(thresholds),
        failures=tuple(texts),
        missing_slices=tuple(missing),
    )
