"""Pure computations on what was read: the confusion matrix, per-class recall, the
most confident mistakes, and whether the matrix agrees with TFMA's per-class accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.datasets import NUM_CLASSES
from report.reading import EvalPredictions, TfmaAccuracy

# TFMA stores accuracies as float32 ratios; anything closer than this is the same ratio.
AGREEMENT_TOLERANCE = 1e-6


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
