"""The evaluation report of one pipeline run: what the model got right and wrong,
drawn with matplotlib's Agg renderer and assembled into one self-contained
``index.html`` (every figure inline as a base64 PNG, inline CSS, no script and no
network address), the PNG files and ``report.json`` with the facts and figures.

What it shows: the confusion matrix of the trained model's serving signature on
the eval split; per-class accuracy as the Evaluator's TFMA computed it (read back
with ``tfma.load_metrics``, never recomputed); a grid of eval images with their
predicted class, confidence and true class next to the bar chart of their ten
probabilities, the way the TensorFlow Fashion-MNIST basic-classification tutorial
drew them, and a grid of the most confidently wrong images; the training curves
from the Trainer's ``training_stats.json``; and the run's facts (dataset, model,
hyperparameters, counts, gate, push, ML Metadata ids).

Plain functions on directories and numpy arrays. Nothing here knows TFX artifacts
or ML Metadata: ``components/report_component.py`` turns a run's artifacts into
these inputs. TensorFlow and TFMA are imported inside the functions that read
their files, so the drawing and the HTML need only numpy and matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from components.datasets import IMAGE_HEIGHT, IMAGE_KEY, IMAGE_WIDTH, LABEL_KEY, NUM_CLASSES

logger = logging.getLogger(__name__)

ACCURACY_METRIC = "sparse_categorical_accuracy"
EXAMPLE_COUNT_METRIC = "example_count"
SERVING_SIGNATURE = "serving_default"
TRAINING_STATS_FILE = "training_stats.json"

HTML_FILE = "index.html"
JSON_FILE = "report.json"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
CLASS_ACCURACY_PNG = "class_accuracy.png"
PREDICTIONS_PNG = "predictions.png"
MISTAKES_PNG = "confident_mistakes.png"
TRAINING_CURVES_PNG = "training_curves.png"

# The tutorial's grid: 5 rows of 3 (image, probabilities) pairs.
GRID_COLUMNS = 3
DEFAULT_GRID_IMAGES = 15
# TFMA stores accuracies as float32 ratios; anything closer than this is the same ratio.
AGREEMENT_TOLERANCE = 1e-6

_CORRECT_COLOUR = "blue"
_WRONG_COLOUR = "red"
_OTHER_BAR_COLOUR = "#777777"
_PREDICT_BATCH = 1000


# ---------------------------------------------------------------- what is read


@dataclass(frozen=True)
class EvalPredictions:
    """The serving signature's answers on the eval split, in the split's record order."""

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
        raise FileNotFoundError(f"{directory}: no TFRecord files in the eval split")
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


# ------------------------------------------------------------------ arithmetic


def confusion_matrix(
    labels: np.ndarray, predicted: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Counts [true class, predicted class], int64 [num_classes, num_classes]."""
    labels = np.asarray(labels, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_recall(matrix: np.ndarray) -> list[float | None]:
    """Diagonal over row sums: the share of each true class predicted right
    (what TFMA's accuracy on a ``label`` slice measures); None for an empty row."""
    rows = matrix.sum(axis=1)
    return [float(matrix[i, i] / rows[i]) if rows[i] else None for i in range(len(matrix))]


def most_confident_mistakes(predictions: EvalPredictions, count: int) -> np.ndarray:
    """Indices of up to ``count`` wrong predictions, most confident first (ties by index)."""
    wrong = np.flatnonzero(~predictions.correct)
    order = np.lexsort((wrong, -predictions.confidence[wrong]))
    return wrong[order][:count]


def tfma_agreement(matrix: np.ndarray, tfma_accuracy: TfmaAccuracy) -> dict[str, Any]:
    """Whether the confusion matrix's per-class ratios are TFMA's per-class accuracies."""
    recall = per_class_recall(matrix)
    differences = {}
    for label, accuracy in tfma_accuracy.per_class.items():
        ours = recall[label] if 0 <= label < len(recall) else None
        differences[label] = None if ours is None else abs(ours - accuracy)
    known = [d for d in differences.values() if d is not None]
    same_classes = sorted(tfma_accuracy.per_class) == [
        label for label, ratio in enumerate(recall) if ratio is not None
    ]
    same_count = tfma_accuracy.example_count in (None, int(matrix.sum()))
    largest = max(known) if known else None
    return {
        "max_abs_difference": largest,
        "tolerance": AGREEMENT_TOLERANCE,
        "same_classes": same_classes,
        "same_example_count": same_count,
        "agrees": bool(
            same_classes
            and same_count
            and len(known) == len(differences)
            and (largest is None or largest <= AGREEMENT_TOLERANCE)
        ),
    }


def _grid_entries(predictions: EvalPredictions, indices: np.ndarray) -> list[dict[str, Any]]:
    return [
        {
            "index": int(i),
            "label": int(predictions.labels[i]),
            "predicted": int(predictions.predicted[i]),
            "confidence": float(predictions.confidence[i]),
            "correct": bool(predictions.correct[i]),
        }
        for i in indices
    ]


# -------------------------------------------------------------------- figures


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    # Matplotlib's Agg raster renderer; no display or pyplot state involved.
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure, tight: bool = True) -> bytes:
    """The figure as PNG bytes; ``tight`` crops to what is drawn (one more layout pass)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight" if tight else None, facecolor="white")
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, read from the PNG header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def draw_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Counts in every cell, colour by the share of the row (the true class)."""
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    figure = _new_figure(8.5, 7.5)
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for true in range(matrix.shape[0]):
        for pred in range(matrix.shape[1]):
            ax.text(
                pred,
                true,
                str(int(matrix[true, pred])),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if shares[true, pred] > 0.6 else "black",
            )
    ticks = range(len(class_names))
    ax.set_xticks(ticks, [f"{i} {n}" if n != str(i) else n for i, n in enumerate(class_names)])
    ax.set_yticks(ticks, [f"{i} {n}" if n != str(i) else n for i, n in enumerate(class_names)])
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total, right = int(matrix.sum()), int(np.trace(matrix))
    ax.set_title(
        f"Confusion matrix: {total:,} eval examples, {right:,} right ({right / total:.1%})"
        if total
        else "Confusion matrix: no eval examples"
    )
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return figure


def draw_class_accuracy(
    tfma_accuracy: TfmaAccuracy,
    class_names: Sequence[str],
    class_floors: Mapping[int, float] | None = None,
    overall_floor: float | None = None,
) -> Figure:
    """TFMA's accuracy on each ``label`` slice as bars, its overall accuracy and the
    blessing floors as lines; bars under their floor in red."""
    class_floors = dict(class_floors or {})
    labels = list(range(len(class_names)))
    values = [tfma_accuracy.per_class.get(label, 0.0) for label in labels]
    colours = [
        _WRONG_COLOUR if label in class_floors and value < class_floors[label] else "#4c72b0"
        for label, value in zip(labels, values, strict=True)
    ]
    figure = _new_figure(10, 4.8)
    ax = figure.add_subplot()
    bars = ax.bar(labels, values, color=colours)
    for bar, label in zip(bars, labels, strict=True):
        if label not in tfma_accuracy.per_class:
            text = "n/a"
        else:
            text = f"{tfma_accuracy.per_class[label]:.3f}"
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + 0.01,
            text,
            ha="center",
            va="bottom",
            fontsize=8,
        )
    for label, floor in class_floors.items():
        ax.hlines(floor, label - 0.45, label + 0.45, colors=_WRONG_COLOUR, linewidth=2)
    if tfma_accuracy.overall is not None:
        ax.axhline(
            tfma_accuracy.overall,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"overall {tfma_accuracy.overall:.4f}",
        )
    if overall_floor is not None:
        ax.axhline(
            overall_floor,
            color=_WRONG_COLOUR,
            linestyle=":",
            linewidth=1,
            label=f"overall floor {overall_floor:g}",
        )
    if class_floors:
        ax.plot([], [], color=_WRONG_COLOUR, linewidth=2, label="class floor")
    ax.set_xticks(labels, [f"{i} {n}" if n != str(i) else n for i, n in enumerate(class_names)])
    ax.tick_params(axis="x", labelrotation=30 if max(map(len, class_names)) > 2 else 0)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right" if max(map(len, class_names)) > 2 else "center")
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("accuracy on the class's eval examples")
    ax.set_title("Accuracy per true class (the Evaluator's TFMA slices label=N)")
    ax.legend(loc="upper right", ncols=3, fontsize=8)
    return figure


def draw_prediction_grid(
    predictions: EvalPredictions,
    indices: Sequence[int],
    class_names: Sequence[str],
    title: str,
    columns: int = GRID_COLUMNS,
) -> Figure:
    """Each image with "predicted confidence% (true)" under it (blue when right, red
    when wrong) and beside it the bar chart of its ten probabilities (predicted bar
    red, true bar blue), as the Fashion-MNIST basic-classification tutorial drew them."""
    count = len(indices)
    rows = max(1, math.ceil(count / columns))
    figure = _new_figure(4.2 * columns, 2.3 * rows + 0.6)
    grid = figure.add_gridspec(rows, 2 * columns, width_ratios=[1, 1.25] * columns)
    for position, index in enumerate(indices):
        row, column = divmod(position, columns)
        true, predicted = int(predictions.labels[index]), int(predictions.predicted[index])
        confidence = float(predictions.confidence[index])
        colour = _CORRECT_COLOUR if true == predicted else _WRONG_COLOUR

        image_ax = figure.add_subplot(grid[row, 2 * column])
        image_ax.imshow(predictions.images[index], cmap="binary")
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        image_ax.set_xlabel(
            f"{class_names[predicted]} {confidence:.0%} ({class_names[true]})",
            color=colour,
            fontsize=8,
        )
        image_ax.set_title(f"#{index}", fontsize=7, color="#555555")

        bars_ax = figure.add_subplot(grid[row, 2 * column + 1])
        bars = bars_ax.bar(
            range(NUM_CLASSES), predictions.probabilities[index], color=_OTHER_BAR_COLOUR
        )
        bars[predicted].set_color(_WRONG_COLOUR)
        # Drawn after the predicted bar, so a right prediction shows blue.
        bars[true].set_color(_CORRECT_COLOUR)
        bars_ax.set_ylim(0, 1)
        bars_ax.set_xticks(range(NUM_CLASSES), [str(i) for i in range(NUM_CLASSES)], fontsize=6)
        bars_ax.set_yticks([])
    height = figure.get_figheight()
    figure.suptitle(title, fontsize=11, y=1 - 0.12 / height)
    # Fixed margins in inches: tight_layout over 30 axes costs about a second per grid.
    figure.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=0.35 / height,
        top=1 - 0.7 / height,
        wspace=0.12,
        hspace=0.45,
    )
    return figure


def draw_training_curves(history: Mapping[str, Sequence[float]]) -> Figure | None:
    """Loss and accuracy per epoch, training and validation; None without a history."""
    panels = [
        (name, f"val_{name}")
        for name in ("loss", *sorted(k for k in history if "acc" in k and not k.startswith("val_")))
        if history.get(name)
    ]
    if not panels:
        return None
    figure = _new_figure(5.5 * len(panels), 4)
    for position, (name, val_name) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, len(panels), position)
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], "o-", label="training")
        if history.get(val_name):
            ax.plot(
                range(1, len(history[val_name]) + 1),
                history[val_name],
                "s--",
                label="validation (eval split)",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name} per epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


# ----------------------------------------------------------------------- HTML

_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 0; background: #f4f5f7;
  color: #1d1f23; }
main { max-width: 1120px; margin: 0 auto; padding: 16px 24px 40px; background: #ffffff; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d9dce1; padding-bottom: 4px; }
p.lead { margin: 0 0 12px; color: #444b55; }
.verdict { display: inline-block; padding: 4px 12px; border-radius: 4px; font-weight: bold;
  color: #ffffff; }
.blessed { background: #2e7d32; }
.not-blessed { background: #c62828; }
.undecided { background: #757575; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 14px; }
th, td { border: 1px solid #d9dce1; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef0f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #2e7d32; font-weight: bold; }
.fail { color: #c62828; font-weight: bold; }
.warn { background: #fff3e0; border-left: 4px solid #ef6c00; padding: 6px 10px; }
.note { color: #444b55; font-size: 13px; }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e5e8; }
figcaption { font-size: 13px; color: #444b55; margin-top: 4px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table under a header row; the cells are HTML already (built with ``_td``)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _key_value_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(key)}</th>{_td(value)}</tr>" for key, value in rows)
    return f"<table><tbody>{body}</tbody></table>"


def _td(value: Any, numeric: bool = False) -> str:
    return f'<td class="num">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


def _figure_html(png: bytes, alt: str, caption: str) -> str:
    width, height = png_size(png)
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}" '
        f'width="{width}" height="{height}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _class_label(label: int | None, class_names: Sequence[str]) -> str:
    if label is None or not 0 <= label < len(class_names):
        return ""
    name = class_names[label]
    return f"class {label}" if name == str(label) else f"class {label} ({name})"


def _requirement(threshold: Mapping[str, Any]) -> str:
    parts = []
    if threshold.get("lower_bound") is not None:
        parts.append(f">= {threshold['lower_bound']:g}")
    if threshold.get("upper_bound") is not None:
        parts.append(f"<= {threshold['upper_bound']:g}")
    if threshold.get("change_direction"):
        sign = ">=" if threshold["change_direction"] == "higher is better" else "<="
        amount = threshold.get("change_absolute")
        what = (
            f"change vs baseline {sign} {amount:+.4g}"
            if amount is not None
            else f"relative change vs baseline {sign} {threshold.get('change_relative'):+.4g}"
        )
        if not threshold.get("change_checked"):
            what += " (not checked: no baseline)"
        parts.append(what)
    return "; ".join(parts) or "(none)"


def _verdict(blessed: bool | None) -> str:
    if blessed is True:
        return '<span class="verdict blessed">BLESSED</span>'
    if blessed is False:
        return '<span class="verdict not-blessed">NOT BLESSED</span>'
    return '<span class="verdict undecided">no blessing decision</span>'


def _push_text(facts: Mapping[str, Any]) -> str:
    if facts.get("pushed") and facts.get("push_reused_version"):
        return (
            f"nothing new: version {facts['pushed_version']} at {facts['pushed_path']} "
            "already serves this model"
        )
    if facts.get("pushed"):
        return f"version {facts['pushed_version']} at {facts['pushed_path']}"
    if facts.get("blessed") is False:
        return "nothing (the model was not blessed)"
    return "nothing"


def _facts_section(report: Mapping[str, Any]) -> str:
    facts = report["facts"]
    names = facts["class_names"]
    counts = facts.get("example_counts", {})
    training = report.get("training") or {}
    hparams = ", ".join(f"{k}={v}" for k, v in sorted(facts["hparams"].items())) or "(defaults)"
    rows = [
        ("Dataset", f"{facts['dataset']} ({len(names)} classes: {', '.join(names)})"),
        ("Model", facts["model"]),
        ("Hyperparameters", hparams),
        (
            "Examples",
            ", ".join(f"{split} {count:,}" for split, count in counts.items()) or "unknown",
        ),
        ("Eval accuracy (TFMA)", _fmt(report["tfma"]["overall_accuracy"])),
        (
            "Blessing",
            {True: "BLESSED", False: "NOT blessed", None: "no decision"}[facts.get("blessed")],
        ),
        ("Pushed", _push_text(facts)),
    ]
    if training:
        rows.append(
            (
                "Training",
                f"{training.get('epochs')} epochs, {training.get('steps')} steps of "
                f"{training.get('batch_size')}, {training.get('fit_seconds')} s, "
                f"{training.get('images_per_second')} images/s",
            )
        )
    return "<h2>Run</h2>" + _key_value_table(rows)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _gate_section(report: Mapping[str, Any]) -> str:
    gate = report["gate"]
    names = report["facts"]["class_names"]
    rows = []
    for threshold in gate["thresholds"]:
        where = threshold["slice"]
        if threshold.get("label") is not None:
            where = _class_label(threshold["label"], names)
        if threshold["passed"] is None:
            result = "<td>not validated</td>"
        elif threshold["passed"]:
            result = '<td class="pass">passed</td>'
        else:
            result = f'<td class="fail">FAILED: {_e("; ".join(threshold["failures"]))}</td>'
        rows.append(
            [
                _td(where),
                _td(threshold["metric"]),
                _td(_requirement(threshold)),
                _td(_fmt(threshold.get("value")), numeric=True),
                result,
            ]
        )
    baseline = (
        "against the latest blessed model as baseline"
        if gate["has_baseline"]
        else "with no baseline (first blessed model; change thresholds are not checked)"
    )
    parts = [
        "<h2>Gate</h2>",
        f"<p>{_verdict(report['facts'].get('blessed'))} Evaluated {_e(baseline)}.</p>",
    ]
    parts.append(
        _table(["slice", "metric", "requirement", "TFMA value", "result"], rows)
        if rows
        else "<p>No thresholds configured: TFMA validates nothing and blesses nothing.</p>"
    )
    shown = {text for threshold in gate["thresholds"] for text in threshold["failures"]}
    for failure in gate["failures"]:
        if failure not in shown:
            parts.append(f'<p class="fail">{_e(failure)}</p>')
    return "".join(parts)


def _class_section(report: Mapping[str, Any], figures: Mapping[str, str]) -> str:
    names = report["facts"]["class_names"]
    tfma_result = report["tfma"]
    matrix = np.array(report["confusion_matrix"]["counts"])
    rows = []
    for label, name in enumerate(names):
        row = matrix[label]
        others = row.copy()
        others[label] = 0
        confused = int(others.argmax())
        confusion = f"{names[confused]} ({int(others[confused])})" if others.any() else "none"
        accuracy = tfma_result["per_class_accuracy"].get(str(label))
        count = tfma_result["per_class_count"].get(str(label))
        rows.append(
            [
                _td(label, numeric=True),
                _td(name),
                _td(_fmt(accuracy), numeric=True),
                _td("n/a" if count is None else count, numeric=True),
                _td(f"{int(row[label])} / {int(row.sum())}", numeric=True),
                _td(confusion),
            ]
        )
    agreement = report["agreement"]
    if agreement["agrees"]:
        note = (
            "<p class=\"note\">The confusion matrix's diagonal over its row sums equals TFMA's "
            f"per-class accuracy for every class (largest difference "
            f"{agreement['max_abs_difference']:.1e}).</p>"
        )
    else:
        note = (
            '<p class="warn">The confusion matrix (the serving signature run over the eval '
            "split) does not agree with TFMA's per-class accuracy: largest difference "
            f"{_e(agreement['max_abs_difference'])}, same classes "
            f"{_e(agreement['same_classes'])}, same example count "
            f"{_e(agreement['same_example_count'])}.</p>"
        )
    return (
        "<h2>Accuracy per class</h2>"
        + figures.get(CLASS_ACCURACY_PNG, "")
        + _table(
            [
                "label",
                "class",
                "TFMA accuracy",
                "TFMA examples",
                "right / total (confusion matrix)",
                "most often mistaken for",
            ],
            rows,
        )
        + note
        + "<h2>Confusion matrix</h2>"
        + figures.get(CONFUSION_MATRIX_PNG, "")
    )


def _mlmd_section(report: Mapping[str, Any]) -> str:
    mlmd = report["facts"].get("mlmd") or {}
    rows = [
        ("pipeline", mlmd.get("pipeline")),
        ("pipeline run", mlmd.get("run_id")),
        ("report node", mlmd.get("node")),
        ("report execution id", mlmd.get("execution_id")),
        ("baseline model id", mlmd.get("baseline_model_id")),
    ]
    rows += [
        (f"input {key} artifact id", artifact_id)
        for key, artifact_id in (mlmd.get("input_artifact_ids") or {}).items()
    ]
    rows = [(key, "unknown" if value in (None, "") else value) for key, value in rows]
    return "<h2>ML Metadata</h2>" + _key_value_table(rows)


def render_html(report: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    """The self-contained page: ``report`` (what report.json holds) and the figures'
    PNG bytes by file name, each embedded as a data: URI."""
    facts = report["facts"]
    names = facts["class_names"]
    captions = report["figure_captions"]
    figures = {
        name: _figure_html(png, captions[name], captions[name]) for name, png in pngs.items()
    }
    mistakes = figures.get(MISTAKES_PNG) or "<p>No wrong predictions on the eval split.</p>"
    curves = figures.get(TRAINING_CURVES_PNG) or (
        "<p>No per-epoch history in the Trainer's training_stats.json.</p>"
    )
    title = f"Evaluation report: {facts['dataset']}, {facts['model']}"
    index_note = ""
    if any(name != str(label) for label, name in enumerate(names)):
        index_note = (
            '<p class="note">Class numbers on the bar charts: '
            + _e(", ".join(f"{i} {n}" for i, n in enumerate(names)))
            + "</p>"
        )
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
            f"<h1>{_e(title)}</h1>",
            f'<p class="lead">{_verdict(facts.get("blessed"))} eval accuracy '
            f"{_e(_fmt(report['tfma']['overall_accuracy']))} on "
            f"{_e(report['confusion_matrix']['total'])} examples; pushed: "
            f"{_e(_push_text(facts))}</p>",
            _facts_section(report),
            _gate_section(report),
            _class_section(report, figures),
            "<h2>Predictions</h2>",
            figures.get(PREDICTIONS_PNG, ""),
            index_note,
            "<h2>Most confidently wrong</h2>",
            mistakes,
            "<h2>Training</h2>",
            curves,
            _mlmd_section(report),
            '<h2>Files</h2><p class="note">Next to this page: ',
            _e(", ".join([*report["figures"].values(), JSON_FILE])),
            "</p></main></body></html>\n",
        ]
    )


# ---------------------------------------------------------------- the report


def _floors(gate: Gate) -> tuple[dict[int, float], float | None]:
    class_floors = {}
    overall = None
    for threshold in gate.thresholds:
        if threshold.metric != ACCURACY_METRIC or threshold.lower_bound is None:
            continue
        if threshold.label is not None:
            class_floors[threshold.label] = threshold.lower_bound
        elif threshold.slice == "overall":
            overall = threshold.lower_bound
    return class_floors, overall


def build_report(
    data: ReportData,
    grid_images: int = DEFAULT_GRID_IMAGES,
    mistake_images: int = DEFAULT_GRID_IMAGES,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(the report.json content, the PNG bytes by file name)."""
    predictions, names = data.predictions, data.facts.class_names
    matrix = confusion_matrix(predictions.labels, predictions.predicted, len(names))
    grid = np.arange(min(grid_images, len(predictions)))
    mistakes = most_confident_mistakes(predictions, mistake_images)
    class_floors, overall_floor = _floors(data.gate)

    drawn: dict[str, tuple[Figure, str]] = {
        CLASS_ACCURACY_PNG: (
            draw_class_accuracy(data.tfma, names, class_floors, overall_floor),
            "Accuracy per true class, as the Evaluator's TFMA computed it, with the blessing "
            "floors",
        ),
        CONFUSION_MATRIX_PNG: (
            draw_confusion_matrix(matrix, names),
            "Confusion matrix: rows are true classes, columns predicted classes; counts in "
            "the cells, colour by the share of the row",
        ),
        PREDICTIONS_PNG: (
            draw_prediction_grid(predictions, grid, names, f"The first {len(grid)} eval images"),
            f"The first {len(grid)} eval images: predicted class, confidence and (true class), "
            "blue when right, red when wrong; beside each its ten probabilities, the "
            "predicted bar red and the true bar blue",
        ),
    }
    if len(mistakes):
        drawn[MISTAKES_PNG] = (
            draw_prediction_grid(
                predictions, mistakes, names, f"The {len(mistakes)} most confidently wrong"
            ),
            f"The {len(mistakes)} wrong predictions with the highest confidence",
        )
    history = (data.training or {}).get("history") or {}
    curves = draw_training_curves(history)
    if curves is not None:
        drawn[TRAINING_CURVES_PNG] = (
            curves,
            "Loss and accuracy per epoch on the training data and on the eval split "
            "(from the Trainer's training_stats.json)",
        )
    pngs = {
        name: figure_png(figure, tight=name not in (PREDICTIONS_PNG, MISTAKES_PNG))
        for name, (figure, _) in drawn.items()
    }

    recall = per_class_recall(matrix)
    report = {
        "facts": asdict(data.facts),
        "gate": asdict(data.gate),
        "tfma": {
            "model_name": data.tfma.model_name,
            "overall_accuracy": data.tfma.overall,
            "example_count": data.tfma.example_count,
            "per_class_accuracy": {str(k): v for k, v in data.tfma.per_class.items()},
            "per_class_count": {str(k): v for k, v in data.tfma.per_class_count.items()},
        },
        "confusion_matrix": {
            "rows": "true class",
            "columns": "predicted class",
            "counts": matrix.tolist(),
            "total": int(matrix.sum()),
            "correct": int(np.trace(matrix)),
            "per_class_recall": recall,
        },
        "agreement": tfma_agreement(matrix, data.tfma),
        "prediction_grid": _grid_entries(predictions, grid),
        "confident_mistakes": _grid_entries(predictions, mistakes),
        "training": data.training,
        "figures": {name.removesuffix(".png"): name for name in drawn},
        "figure_captions": {name: caption for name, (_, caption) in drawn.items()},
    }
    return report, pngs


def write_report(
    output_dir: str,
    data: ReportData,
    grid_images: int = DEFAULT_GRID_IMAGES,
    mistake_images: int = DEFAULT_GRID_IMAGES,
) -> dict[str, Any]:
    """Write index.html, the PNGs and report.json to ``output_dir``; return the report."""
    report, pngs = build_report(data, grid_images, mistake_images)
    os.makedirs(output_dir, exist_ok=True)
    for name, png in pngs.items():
        with open(os.path.join(output_dir, name), "wb") as f:
            f.write(png)
    with open(os.path.join(output_dir, JSON_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    with open(os.path.join(output_dir, HTML_FILE), "w", encoding="utf-8") as f:
        f.write(render_html(report, pngs))
    if not report["agreement"]["agrees"]:
        logger.warning("report: confusion matrix and TFMA disagree: %s", report["agreement"])
    logger.info("evaluation report written to %s", os.path.join(output_dir, HTML_FILE))
    return report
