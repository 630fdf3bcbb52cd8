"""``report.page``: the page rendered from ``templates/report.html``. On real artifacts
(tests/report_fixture.py): self-contained, every figure embedded as its PNG, every
class and the run named. On made-up data: whatever the data holds is escaped, and
the page says what is missing.
"""

from __future__ import annotations

import base64
import html
import re

import numpy as np
import pytest

from report.build import build_report
from report.figures import png_size
from report.page import render_html
from report.reading import (
    EvalPredictions,
    Gate,
    ReportData,
    RunFacts,
    TfmaAccuracy,
    Threshold,
)
from tests.report_fixture import DATASETS, EXECUTION_ID, FIGURES, ReportRun, html_tags, report_run

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(2)>']


@pytest.fixture(scope="module", params=DATASETS)
def run(request, tmp_path_factory) -> ReportRun:
    return report_run(request.param, tmp_path_factory)


def _data(class_names: list[str], wrong: bool = True, **facts) -> ReportData:
    """A made-up report's data: 20 examples, two per class; with ``wrong``, example 3
    is predicted as class 0. TFMA's numbers are the matrix's, so they agree."""
    labels = np.arange(20) % 10
    predicted = labels.copy()
    if wrong:
        predicted[3] = 0
    probabilities = np.full((20, 10), 0.01, dtype=np.float32)
    probabilities[np.arange(20), predicted] = 0.91
    per_class = {label: float(np.mean(predicted[labels == label] == label)) for label in range(10)}
    fields = {
        "dataset": "made_up",
        "class_names": class_names,
        "model": "cnn_model_fn",
        "hparams": {},
        "example_counts": {"test": 20},
        **facts,
    }
    return ReportData(
        facts=RunFacts(**fields),
        predictions=EvalPredictions(np.zeros((20, 28, 28), np.uint8), labels, probabilities),
        tfma=TfmaAccuracy("", float(np.mean(predicted == labels)), 20, per_class, {}),
        gate=Gate(validation_ok=None, has_baseline=False, thresholds=(), failures=()),
    )


# ---------------------------------------------------- on real artifacts


@pytest.mark.slow
def test_html_is_self_contained(run):
    text = run.html
    assert not re.search(r"https?://", text, re.IGNORECASE)
    assert "//" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert "url(" not in text and "@import" not in text
    tags = html_tags(text)
    names = [tag for tag, _ in tags]
    for forbidden in ("script", "link", "iframe", "object", "embed", "base", "a"):
        assert forbidden not in names, forbidden
    for tag, attrs in tags:
        for attribute in ("href", "src", "srcset", "action"):
            value = attrs.get(attribute)
            if value is not None:
                assert tag == "img" and attribute == "src", (tag, attribute)
                assert value.startswith("data:image/png;base64,"), value[:40]


@pytest.mark.slow
def test_html_embeds_every_figure_as_its_png(run):
    images = [attrs for tag, attrs in html_tags(run.html) if tag == "img"]
    assert len(images) == len(FIGURES)
    embedded = [base64.b64decode(attrs["src"].split(",", 1)[1]) for attrs in images]
    on_disk = {name: (run.directory / name).read_bytes() for name in FIGURES}
    assert sorted(embedded) == sorted(on_disk.values())
    for attrs, png in zip(images, embedded, strict=True):
        assert (int(attrs["width"]), int(attrs["height"])) == png_size(png)
        assert attrs["alt"]


@pytest.mark.slow
def test_html_names_every_class_and_the_run(run):
    text = run.html
    for name in run.inputs.class_names:
        # A cell of its own in the per-class table.
        assert f"<td>{html.escape(name)}</td>" in text, name
    assert run.inputs.dataset in text
    assert "cnn_model_fn" in text
    assert ("BLESSED" if run.inputs.blessed else "NOT BLESSED") in text
    assert f"<td>{EXECUTION_ID}</td>" in text


# ------------------------------------------------------- on made-up data


def test_data_reaches_the_page_escaped():
    names = [*HOSTILE, *(str(i) for i in range(2, 10))]
    failure = f"slice label=1 named {HOSTILE[0]} had no examples"
    data = _data(
        names,
        dataset=HOSTILE[0],
        hparams={"note": HOSTILE[1]},
        mlmd={"pipeline": HOSTILE[0], "run_id": HOSTILE[1]},
    )
    data.gate = Gate(
        validation_ok=False,
        has_baseline=False,
        thresholds=(
            Threshold(
                slice="label=0",
                label=0,
                metric="sparse_categorical_accuracy",
                lower_bound=0.5,
                value=1.0,
                passed=False,
                failures=(failure,),
            ),
        ),
        failures=(failure, f"and {HOSTILE[1]}"),
    )
    report, pngs = build_report(data, grid_images=3, mistake_images=3)
    text = render_html(report, pngs)

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in text
    assert "<script" not in text and "onerror=alert(2)>" not in text
    tags = html_tags(text)
    assert "script" not in [tag for tag, _ in tags]
    images = [attrs for tag, attrs in tags if tag == "img"]
    assert len(images) == len(pngs) == 4  # no training history: no curves
    for attrs in images:
        assert set(attrs) == {"src", "alt", "width", "height"}
        assert attrs["src"].startswith("data:image/png;base64,")
    # The escaped text reads as the data in the browser: the class's cell, the title.
    assert f"<td>{html.escape(HOSTILE[0], quote=False)}</td>" in text
    assert f"<title>Evaluation report: {html.escape(HOSTILE[0], quote=False)}, " in text


def test_page_says_what_the_run_does_not_have():
    text = render_html(*build_report(_data([str(i) for i in range(10)], wrong=False)))
    assert "<p>No wrong predictions on the test split.</p>" in text
    assert "<p>No per-epoch history in the Trainer's training_stats.json.</p>" in text
    assert "No thresholds configured: TFMA validates nothing and blesses nothing." in text
    assert '<span class="verdict undecided">no blessing decision</span>' in text
    assert "Class numbers on the bar charts" not in text
    assert "<td>unknown</td>" in text  # no ML Metadata ids outside an orchestrator
    assert "largest difference 0.0e+00" in text
    assert len([tag for tag, _ in html_tags(text) if tag == "img"]) == 3
