"""One report from its ``ReportData``: ``build_report`` computes report.json's content
and draws the PNGs; ``write_report`` writes them and the page into a directory."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from report.figures import (
    draw_class_accuracy,
    draw_confusion_matrix,
    draw_prediction_grid,
    draw_training_curves,
    figure_png,
)
from report.files import (
    CLASS_ACCURACY_PNG,
    CONFUSION_MATRIX_PNG,
    HTML_FILE,
    JSON_FILE,
    MISTAKES_PNG,
    PREDICTIONS_PNG,
    TRAINING_CURVES_PNG,
)
from report.metrics import (
    confusion_matrix,
    most_confident_mistakes,
    per_class_recall,
    tfma_agreement,
)
from report.page import render_html
from report.reading import ACCURACY_METRIC, EvalPredictions, Gate, ReportData

logger = logging.getLogger(__name__)

# Images in each grid (predictions, mistakes): the tutorial's 5 rows of 3.
DEFAULT_GRID_IMAGES = 15


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
            draw_prediction_grid(predictions, grid, names, f"The first {len(grid)} test images"),
            f"The first {len(grid)} test images: predicted class, confidence and (true class), "
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
            "Loss and accuracy per epoch on the training data and on the validation split "
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
