"""The report's page: ``page_context`` turns report.json's content and the PNGs into
plain strings, lists and dicts (numbers formatted, figures as data: URIs), and
``render_html`` renders ``templates/report.html`` with them through Jinja2 with
autoescaping on, so whatever the data holds reaches the page as text."""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import numpy as np

from report.figures import png_size
from report.files import (
    CLASS_ACCURACY_PNG,
    CONFUSION_MATRIX_PNG,
    JSON_FILE,
    MISTAKES_PNG,
    PREDICTIONS_PNG,
    TRAINING_CURVES_PNG,
)

TEMPLATE = "report.html"
# The template's name for each figure.
_FIGURE_KEYS = {
    CLASS_ACCURACY_PNG: "class_accuracy",
    CONFUSION_MATRIX_PNG: "confusion_matrix",
    PREDICTIONS_PNG: "predictions",
    MISTAKES_PNG: "mistakes",
    TRAINING_CURVES_PNG: "training_curves",
}

_VERDICTS = {
    True: {"css": "blessed", "text": "BLESSED"},
    False: {"css": "not-blessed", "text": "NOT BLESSED"},
    None: {"css": "undecided", "text": "no blessing decision"},
}
_BLESSING = {True: "BLESSED", False: "NOT blessed", None: "no decision"}


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(report: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    """The self-contained page: ``report`` (what report.json holds) and the figures'
    PNG bytes by file name, each embedded as a data: URI."""
    return _environment().get_template(TEMPLATE).render(page_context(report, pngs))


def page_context(report: Mapping[str, Any], pngs: Mapping[str, bytes]) -> dict[str, Any]:
    """What the template shows: text (numbers formatted), booleans for its choices,
    and lists and dicts of them."""
    facts = report["facts"]
    names = facts["class_names"]
    captions = report["figure_captions"]
    index_note = None
    if any(name != str(label) for label, name in enumerate(names)):
        index_note = ", ".join(f"{i} {n}" for i, n in enumerate(names))
    return {
        "title": f"Evaluation report: {facts['dataset']}, {facts['model']}",
        "verdict": _VERDICTS[facts.get("blessed")],
        "overall_accuracy": _fmt(report["tfma"]["overall_accuracy"]),
        "test_examples": str(report["confusion_matrix"]["total"]),
        "pushed": _push_text(facts),
        "run_rows": _run_rows(report),
        "gate": _gate(report),
        "class_rows": _class_rows(report),
        "agreement": _agreement(report["agreement"]),
        "figures": {
            key: _figure(pngs[name], captions[name]) if name in pngs else None
            for name, key in _FIGURE_KEYS.items()
        },
        "class_index": index_note,
        "mlmd_rows": _mlmd_rows(facts),
        "files": ", ".join([*report["figures"].values(), JSON_FILE]),
    }


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _figure(png: bytes, caption: str) -> dict[str, str]:
    width, height = png_size(png)
    return {
        "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "alt": caption,
        "caption": caption,
        "width": str(width),
        "height": str(height),
    }


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


def _run_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = report["facts"]
    names = facts["class_names"]
    counts = facts.get("example_counts", {})
    training = report.get("training") or {}
    hparams = ", ".join(f"{k}={v}" for k, v in sorted(facts["hparams"].items())) or "(defaults)"
    rows = [
        ("Dataset", f"{facts['dataset']} ({len(names)} classes: {', '.join(names)})"),
        ("Model", str(facts["model"])),
        ("Hyperparameters", hparams),
        (
            "Examples",
            ", ".join(f"{split} {count:,}" for split, count in counts.items()) or "unknown",
        ),
        ("Test accuracy (TFMA)", _fmt(report["tfma"]["overall_accuracy"])),
        ("Blessing", _BLESSING[facts.get("blessed")]),
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
    return rows


def _gate(report: Mapping[str, Any]) -> dict[str, Any]:
    """The thresholds as table rows, each with its result's text and CSS class."""
    gate = report["gate"]
    names = report["facts"]["class_names"]
    rows = []
    for threshold in gate["thresholds"]:
        where = threshold["slice"]
        if threshold.get("label") is not None:
            where = _class_label(threshold["label"], names)
        if threshold["passed"] is None:
            result = {"css": None, "text": "not validated"}
        elif threshold["passed"]:
            result = {"css": "pass", "text": "passed"}
        else:
            result = {"css": "fail", "text": "FAILED: " + "; ".join(threshold["failures"])}
        rows.append(
            {
                "slice": where,
                "metric": threshold["metric"],
                "requirement": _requirement(threshold),
                "value": _fmt(threshold.get("value")),
                "result": result,
            }
        )
    shown = {text for threshold in gate["thresholds"] for text in threshold["failures"]}
    return {
        "has_baseline": bool(gate["has_baseline"]),
        "rows": rows,
        # Failures no threshold row states, e.g. a slice with no examples.
        "other_failures": [text for text in gate["failures"] if text not in shown],
    }


def _class_rows(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """Per class: TFMA's accuracy and count, and the confusion matrix's row."""
    names = report["facts"]["class_names"]
    tfma_result = report["tfma"]
    matrix = np.array(report["confusion_matrix"]["counts"])
    rows = []
    for label, name in enumerate(names):
        row = matrix[label]
        others = row.copy()
        others[label] = 0
        confused = int(others.argmax())
        count = tfma_result["per_class_count"].get(str(label))
        rows.append(
            {
                "label": str(label),
                "name": name,
                "accuracy": _fmt(tfma_result["per_class_accuracy"].get(str(label))),
                "count": "n/a" if count is None else str(count),
                "right": f"{int(row[label])} / {int(row.sum())}",
                "confused": (
                    f"{names[confused]} ({int(others[confused])})" if others.any() else "none"
                ),
            }
        )
    return rows


def _agreement(agreement: Mapping[str, Any]) -> dict[str, Any]:
    largest = agreement["max_abs_difference"]
    return {
        "agrees": bool(agreement["agrees"]),
        "largest_difference": "n/a" if largest is None else f"{largest:.1e}",
        "max_abs_difference": str(largest),
        "same_classes": str(agreement["same_classes"]),
        "same_example_count": str(agreement["same_example_count"]),
    }


def _mlmd_rows(facts: Mapping[str, Any]) -> list[tuple[str, str]]:
    mlmd = facts.get("mlmd") or {}
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
    return [(key, "unknown" if value in (None, "") else str(value)) for key, value in rows]
