"""What ``report.reading`` reads from real artifacts (tests/report_fixture.py): the
serving signature's predictions on the test split, TFMA's metrics and the gate.

Checked against sources the report does not use: the confusion matrix against the
exported model run by the test through another signature (raw pixels), its
per-class ratios against TFMA's numbers loaded with ``tfma.load_eval_result``, and
the counts against the fixture's labels.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.report_fixture import (
    DATASETS,
    GATES,
    ReportRun,
    exported_model_outputs,
    report_run,
    tfma_per_class,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=DATASETS)
def run(request, tmp_path_factory) -> ReportRun:
    return report_run(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def model_outputs(run) -> dict[str, np.ndarray]:
    return exported_model_outputs(run)


def test_confusion_matrix_counts_every_test_example(run):
    matrix = np.array(run.report["confusion_matrix"]["counts"])
    labels = run.inputs.test_labels
    assert matrix.shape == (10, 10)
    assert matrix.sum() == len(labels) == 200
    assert run.report["tfma"]["example_count"] == 200
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=10))
    _, tfma_counts = tfma_per_class(run)
    assert [tfma_counts[label] for label in range(10)] == matrix.sum(axis=1).tolist()


def test_confusion_matrix_diagonal_ratios_are_tfmas_per_class_accuracy(run):
    matrix = np.array(run.report["confusion_matrix"]["counts"])
    tfma_accuracy, _ = tfma_per_class(run)
    assert sorted(tfma_accuracy) == list(range(10))
    ratios = np.diag(matrix) / matrix.sum(axis=1)
    for label in range(10):
        assert ratios[label] == pytest.approx(tfma_accuracy[label], abs=1e-6), label
        assert run.report["tfma"]["per_class_accuracy"][str(label)] == tfma_accuracy[label]
    assert run.report["agreement"]["agrees"] is True
    overall = np.trace(matrix) / matrix.sum()
    assert overall == pytest.approx(run.report["tfma"]["overall_accuracy"], abs=1e-6)


def test_confusion_matrix_is_the_exported_models_predictions(run, model_outputs):
    predicted = model_outputs["classes"]
    expected = np.zeros((10, 10), dtype=int)
    np.add.at(expected, (run.inputs.test_labels, predicted), 1)
    np.testing.assert_array_equal(np.array(run.report["confusion_matrix"]["counts"]), expected)


def test_report_json_holds_the_gate(run):
    gate = run.report["gate"]
    config = GATES[run.inputs.dataset]
    assert gate["has_baseline"] is config["baseline"]
    assert gate["validation_ok"] is run.inputs.blessed
    assert run.report["tfma"]["model_name"] == ("candidate" if config["baseline"] else "")
    overall, *per_class = gate["thresholds"]
    assert overall["slice"] == "overall"
    assert overall["lower_bound"] == pytest.approx(config["min_accuracy"])
    # TFMA drops change thresholds from the config it runs when there is no baseline.
    assert overall["change_direction"] == ("higher is better" if config["baseline"] else None)
    assert overall["change_checked"] is config["baseline"]
    assert overall["value"] == run.report["tfma"]["overall_accuracy"]
    floors = {t["label"]: t["lower_bound"] for t in per_class}
    assert floors == pytest.approx(config["min_class_accuracy"])
    for threshold in gate["thresholds"]:
        meets = threshold["value"] >= threshold["lower_bound"]
        assert threshold["passed"] is meets, threshold
        assert bool(threshold["failures"]) is not meets
    if not run.inputs.blessed:
        assert any("is below the floor 0.99" in text for text in gate["failures"])
        assert "FAILED" in run.html
