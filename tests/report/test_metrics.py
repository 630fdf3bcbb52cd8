"""``report.metrics`` on known values: the confusion matrix, per-class recall, the
most confident mistakes and the agreement check against TFMA's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from report.metrics import (
    confusion_matrix,
    most_confident_mistakes,
    per_class_recall,
    tfma_agreement,
)
from report.reading import EvalPredictions, TfmaAccuracy


def test_confusion_matrix_and_recall_on_known_values():
    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    matrix = confusion_matrix(labels, predicted, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert per_class_recall(matrix) == [0.5, pytest.approx(2 / 3), 1.0, None]


def test_most_confident_mistakes_orders_by_confidence_then_index():
    probabilities = np.full((5, 10), 0.0, dtype=np.float32)
    for row, (cls, p) in enumerate([(0, 0.9), (1, 0.6), (2, 0.8), (3, 0.6), (4, 0.99)]):
        probabilities[row, cls] = p
        probabilities[row, (cls + 1) % 10] = 1 - p
    labels = np.array([0, 2, 0, 0, 4])  # rows 1, 2, 3 are wrong
    predictions = EvalPredictions(np.zeros((5, 28, 28), np.uint8), labels, probabilities)
    assert most_confident_mistakes(predictions, 10).tolist() == [2, 1, 3]
    assert most_confident_mistakes(predictions, 2).tolist() == [2, 1]


def test_agreement_flags_a_matrix_that_is_not_tfmas():
    matrix = np.diag([20] * 10)
    matrix[3, 3], matrix[3, 5] = 19, 1
    tfma_numbers = TfmaAccuracy(
        "", 0.995, 200, {label: 1.0 for label in range(10)}, {label: 20 for label in range(10)}
    )
    result = tfma_agreement(matrix, tfma_numbers)
    assert result["agrees"] is False
    assert result["max_abs_difference"] == pytest.approx(0.05)
