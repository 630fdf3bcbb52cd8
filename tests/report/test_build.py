"""``report.build`` on real artifacts (tests/report_fixture.py): the images report.json
lists for its two grids, checked against the exported model run by the test through
another signature (raw pixels) and the fixture's labels."""

from __future__ import annotations

import numpy as np
import pytest

from tests.report_fixture import DATASETS, ReportRun, exported_model_outputs, report_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=DATASETS)
def run(request, tmp_path_factory) -> ReportRun:
    return report_run(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def model_outputs(run) -> dict[str, np.ndarray]:
    return exported_model_outputs(run)


def test_prediction_grid_is_the_first_test_images(run, model_outputs):
    grid = run.report["prediction_grid"]
    assert [entry["index"] for entry in grid] == list(range(15))
    for entry in grid:
        index = entry["index"]
        assert entry["label"] == run.inputs.test_labels[index]
        assert entry["predicted"] == model_outputs["classes"][index]
        assert entry["confidence"] == pytest.approx(
            model_outputs["probabilities"][index].max(), abs=1e-6
        )
        assert entry["correct"] == (entry["label"] == entry["predicted"])


def test_mistakes_grid_shows_only_the_most_confident_wrong_predictions(run, model_outputs):
    mistakes = run.report["confident_mistakes"]
    labels = run.inputs.test_labels
    predicted = model_outputs["classes"]
    confidence = model_outputs["probabilities"].max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    assert 0 < len(mistakes) == min(15, len(wrong))
    for entry in mistakes:
        index = entry["index"]
        assert entry["correct"] is False
        assert entry["predicted"] != entry["label"] == labels[index]
        assert entry["predicted"] == predicted[index]
    shown = [entry["confidence"] for entry in mistakes]
    assert shown == sorted(shown, reverse=True)
    # No wrong prediction left out is more confident than the least confident shown.
    left_out = set(wrong.tolist()) - {entry["index"] for entry in mistakes}
    assert all(confidence[i] <= shown[-1] + 1e-6 for i in left_out)
