"""The model card the Pusher writes into every version it publishes
(``components/pusher/model_card.py``), from one real ``mnist-tfx run`` on the committed
Fashion-MNIST fixture: the card is inside the version, its numbers are the run's own
(the summary's TFMA accuracy, the gate's floors, the lineage's sha256), it leaves the
model's verification alone, and ``mnist-tfx versions --card`` prints it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from ingest.datasets import get_dataset
from tests.pipeline_fixture import fail_text, pipeline_args, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATASET = "fashion_mnist"
# Per-class floors low enough for a model trained on 275 images to pass, but present,
# so the card has to state them.
CLASS_FLOOR = "0.01"


class Run:
    def __init__(self, root: Path) -> None:
        self.root = root
        summary_path = root / "summary.json"
        self.proc: subprocess.CompletedProcess = run_cli(
            *pipeline_args(
                DATASET,
                root,
                "--min-class-accuracy",
                CLASS_FLOOR,
                "--summary-json",
                str(summary_path),
            ),
            cwd=root,
        )
        assert self.proc.returncode == 0, fail_text(self.proc)
        self.summary = json.loads(summary_path.read_text())
        self.version_dir = Path(self.summary["pushed_path"])
        self.card = (self.version_dir / "assets.extra" / "model_card.md").read_text()
        self.html = (self.version_dir / "assets.extra" / "model_card.html").read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(
            *args, "--dataset", DATASET, "--output-root", str(self.root / "out"), cwd=self.root
        )


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return Run(tmp_path_factory.mktemp("card"))


def test_the_card_is_inside_the_pushed_version(run):
    assert run.summary["pushed"] is True
    assert run.version_dir.name == run.summary["pushed_version"]
    assert run.card.startswith(f"# Model card: {DATASET} version {run.summary['pushed_version']}\n")
    assert "- model_fn: `cnn_model_fn`" in run.card
    assert "- blessed by the Evaluator: true" in run.card
    # The Pusher's archive copy (the PushedModel artifact) carries the same card as it
    # was published, before the EvaluationReport linked its report into the version.
    pushed = sorted((run.root / "out").glob(f"{DATASET}_cnn/**/Pusher/pushed_model/*"))
    assert len(pushed) == 1
    archived = (pushed[0] / "assets.extra" / "model_card.md").read_text().splitlines()
    served = run.card.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(archived, served, strict=False)) if a != b]
    assert len(archived) == len(served) and len(changed) == 1, changed
    assert archived[changed[0]].startswith("Not linked yet: the EvaluationReport component")
    assert served[changed[0]].startswith("[The evaluation report of run ")


def test_overall_and_every_class_equal_tfma(run):
    summary = run.summary
    assert f"overall: {summary['accuracy']:.4f} on 200 test images\n" in run.card
    names = get_dataset(DATASET).class_names
    per_class = {int(k): v for k, v in summary["per_class_accuracy"].items()}
    counts = {int(k): v for k, v in summary["per_class_count"].items()}
    assert sorted(per_class) == list(range(10))
    rows = re.findall(r"^\| (\d) \| ([^|]+) \| ([0-9.]+) \| (\d+) \|$", run.card, re.M)
    assert [(int(a), b.strip(), float(c), int(d)) for a, b, c, d in rows] == [
        (label, names[label], round(per_class[label], 4), counts[label]) for label in range(10)
    ]
    # The hardest classes are named, worst first, by their class names.
    worst = sorted(per_class, key=lambda label: (per_class[label], label))[:3]
    line = next(x for x in run.card.splitlines() if x.startswith("hardest classes: "))
    assert line == "hardest classes: " + ", ".join(
        f"{label} ({names[label]}): {per_class[label]:.4f}" for label in worst
    )


def test_the_gate_thresholds_and_baseline(run):
    accuracy = run.summary["accuracy"]
    # --min-accuracy 0.4 (pipeline_args). The change threshold of --max-accuracy-drop is
    # dropped from the eval config by TFX's Evaluator when there is no baseline.
    row = f"| overall | sparse_categorical_accuracy | >= 0.4000 | {accuracy:.4f} | passed |"
    assert row in run.card.splitlines(), run.card
    names = get_dataset(DATASET).class_names
    for label, value in run.summary["per_class_accuracy"].items():
        assert (
            f"| class {label} ({names[int(label)]}) | sparse_categorical_accuracy | >= 0.0100 "
            f"| {value:.4f} | passed |" in run.card
        ), run.card
    assert "baseline: no baseline: first model" in run.card


def test_the_card_links_the_runs_evaluation_report_copied_beside_it(run):
    report = Path(run.summary["report_path"])
    line = (
        f"[The evaluation report of run {run.summary['run_id']}](evaluation_report/index.html): "
        "a copy beside this card (`assets.extra/evaluation_report/`); the run wrote it to "
        f"{report}."
    )
    assert line in run.card.splitlines(), run.card
    copy = run.version_dir / "assets.extra" / "evaluation_report"
    # The whole report travels with the version: the page, its figures, its facts.
    files = sorted(p.relative_to(report.parent) for p in report.parent.rglob("*") if p.is_file())
    assert (copy / "index.html").is_file() and len(files) > 2
    assert sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == files
    for rel in files:
        assert (copy / rel).read_bytes() == (report.parent / rel).read_bytes(), rel
    # Every image the copied page shows is embedded or in the copy.
    page = (copy / "index.html").read_text()
    images = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert images
    for src in images:
        assert src.startswith("data:image/png;base64,") or (copy / src).is_file(), src[:80]
    assert f"of run {run.summary['run_id']}</a>" in run.html
    assert '<a href="evaluation_report/index.html">' in run.html


def test_the_sources_sha256_equal_the_lineage(run):
    proc = run.cli("versions", "--json")
    assert proc.returncode == 0, fail_text(proc)
    (row,) = json.loads(proc.stdout)
    assert row["lineage_from"].startswith("recorded at push time")
    (source,) = row["training_sources"]
    assert len(source["source_sha256"]) == 4
    for stem, sha in source["source_sha256"].items():
        assert f"| {stem} | `{sha}` |" in run.card
    assert f"### span {source['span']} of {DATASET}" in run.card
    assert f"manifest sha256: `{source['manifest_sha256']}`" in run.card
    assert "examples: train 275, validation 25, test 200" in run.card
    training = run.summary["training"]
    assert f"| epochs (as trained) | {training['epochs']} |" in run.card
    assert "| batch_size | 50 |" in run.card and "| seed | 42 |" in run.card


def test_the_html_card_states_the_same_facts_without_external_assets(run):
    html = run.html
    assert f"overall: <b>{run.summary['accuracy']:.4f} on 200 test images</b>" in html
    for value in run.summary["per_class_accuracy"].values():
        assert f"<td>{value:.4f}</td>" in html
    assert "Shirt" in html and "no baseline: first model" in html
    # No external assets: the one link is the report copied beside the card.
    assert re.findall(r"(?:src|href)=\"([^\"]*)\"", html) == ["evaluation_report/index.html"]
    assert not re.search(r"<link|@import|url\(", html)


def test_the_card_leaves_the_model_and_its_verification_alone(run):
    from components.pusher.model_card import model_digest
    from serving.publish import tree_digest
    from serving.verify import verify_saved_model

    trainer_models = sorted(
        (run.root / "out").glob(f"{DATASET}_cnn/**/Trainer/model/*/Format-Serving")
    )
    assert len(trainer_models) == 1
    export = trainer_models[0]
    assert not (export / "assets.extra" / "model_card.md").exists()
    assert (run.version_dir / "assets.extra" / "evaluation_report" / "index.html").is_file()
    assert tree_digest(run.version_dir) != tree_digest(export)
    assert model_digest(run.version_dir) == model_digest(export) == tree_digest(export)
    assert f"| sha256 of the model's files (card aside) | {tree_digest(export)} |" in run.card
    verify_saved_model(str(run.version_dir))


def test_versions_card_prints_the_card(run):
    proc = run.cli("versions", "--card", run.summary["pushed_version"])
    assert proc.returncode == 0, fail_text(proc)
    assert proc.stdout == run.card
