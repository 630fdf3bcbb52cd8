"""``components/pusher/model_card.py`` without a pipeline run: what a card says when a
fact is out of reach, that the HTML escapes what the facts hold, where the Evaluator's
and the Trainer's other outputs are found, and that a version counts as the same model
as the Trainer's export whatever its card says. The card of a real run is checked in
tests/components/test_pusher_card.py."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.pusher import model_card
from components.pusher.executor import current_version_if_same


def _export(root: Path) -> Path:
    """A stand-in for the Trainer's export: the files the card and the digest read."""
    model = root / "export"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "variables.index").write_bytes(b"weights")
    (model / "assets.extra").mkdir()
    (model / "assets.extra" / "expected_predictions.json").write_text("{}")
    return model


def test_facts_out_of_reach_are_written_as_not_recorded(tmp_path):
    facts = model_card.gather_facts(
        model_dir=str(_export(tmp_path)), model_name="mnist", version=7, blessing=None
    )
    card = model_card.render_markdown(facts)
    assert card.startswith("# Model card: mnist version 7\n")
    assert "sources: not recorded" in card
    assert "test accuracy: not recorded" in card
    assert "thresholds: not recorded" in card
    assert "baseline: no baseline: first model" in card
    assert card.rstrip().endswith(
        "not recorded by this run: training data lineage: no assets.extra/lineage/sources.json "
        "in the model; training statistics: the Trainer's training_stats.json; "
        "test accuracy: the Evaluator's TFMA output"
    )


def test_the_html_card_escapes_what_the_facts_hold(tmp_path):
    facts = model_card.gather_facts(
        model_dir=str(_export(tmp_path)),
        model_name="<script>alert(1)</script>",
        version=7,
        blessing=None,
        card_config={"dataset": "mnist", "hparams": {"model": "a<b"}},
    )
    html = model_card.render_html(facts)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<code>a&lt;b</code>" in html


def test_sibling_outputs_are_found_in_local_and_kubeflow_layouts(tmp_path):
    local = tmp_path / "root" / "Evaluator"
    (local / "blessing" / "9").mkdir(parents=True)
    (local / "evaluation" / "9").mkdir(parents=True)
    assert model_card.sibling_output(str(local / "blessing" / "9"), "evaluation") == str(
        local / "evaluation" / "9"
    )
    kubeflow = tmp_path / "job" / "Trainer"
    (kubeflow / "model").mkdir(parents=True)
    (kubeflow / "model_run").mkdir()
    assert model_card.sibling_output(str(kubeflow / "model"), "model_run") == str(
        kubeflow / "model_run"
    )
    assert model_card.sibling_output(str(local / "blessing" / "9"), "model_run") is None


def test_a_version_with_a_card_is_still_the_same_model(tmp_path):
    export = _export(tmp_path)
    base = tmp_path / "serving" / "mnist"
    base.mkdir(parents=True)
    assert current_version_if_same(str(export), str(base)) is None
    shutil.copytree(export, base / "100")
    facts = model_card.gather_facts(
        model_dir=str(export), model_name="mnist", version=100, blessing=None
    )
    written = model_card.write_card(base / "100", facts)
    assert [Path(p).name for p in written] == ["model_card.md", "model_card.html"]
    assert current_version_if_same(str(export), str(base)) == (100, str(base / "100"))
    # Any other file differing makes it another model.
    (base / "100" / "variables" / "variables.index").write_bytes(b"weightz")
    assert current_version_if_same(str(export), str(base)) is None


def _carded_version(tmp_path: Path, run_id: str = "run-1") -> Path:
    facts = model_card.gather_facts(
        model_dir=str(_export(tmp_path)),
        model_name="mnist",
        version=7,
        blessing=None,
        run_id=run_id,
    )
    version = tmp_path / "serving" / "mnist" / "7"
    shutil.copytree(tmp_path / "export", version)
    model_card.write_card(version, facts)
    return version


def _report(tmp_path: Path) -> Path:
    report = tmp_path / "EvaluationReport" / "report" / "12"
    (report / "img").mkdir(parents=True)
    (report / "index.html").write_text('<img src="img/confusion.png">')
    (report / "img" / "confusion.png").write_bytes(b"\x89PNG")
    (report / "report.json").write_text("{}")
    return report


def test_the_card_links_the_report_once_it_is_written(tmp_path):
    version = _carded_version(tmp_path, run_id="run-<1>")
    card = version / "assets.extra" / "model_card.md"
    html = version / "assets.extra" / "model_card.html"
    before_md, before_html = card.read_text(), html.read_text()
    assert "Not linked yet: the EvaluationReport component of run run-<1> writes it" in before_md
    assert 'id="evaluation-report">Not linked yet' in before_html
    digest = model_card.model_digest(version)
    report = _report(tmp_path)

    written = model_card.link_report(str(version), report, "/out/report/12/index.html", "run-<1>")

    copy = version / "assets.extra" / "evaluation_report"
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()) == [
        "img/confusion.png",
        "index.html",
        "report.json",
    ]
    assert (copy / "img" / "confusion.png").read_bytes() == b"\x89PNG"
    assert len(written) == 5 and str(card) in written and str(html) in written
    md = card.read_text()
    assert "Not linked yet" not in md
    assert (
        "[The evaluation report of run run-<1>](evaluation_report/index.html): a copy beside "
        "this card (`assets.extra/evaluation_report/`); the run wrote it to "
        "/out/report/12/index.html." in md.splitlines()
    )
    # Only that line changed, in both files.
    assert [a for a in md.splitlines() if a not in before_md.splitlines()] == [
        next(x for x in md.splitlines() if x.startswith("[The evaluation report"))
    ]
    page = html.read_text()
    assert (
        '<a href="evaluation_report/index.html">The evaluation report of run run-&lt;1&gt;</a>'
        in page
    )
    assert "Not linked yet" not in page and "run-<1>" not in page
    # The relative link resolves from the card's directory.
    assert (card.parent / model_card.REPORT_LINK).read_text() == (report / "index.html").read_text()
    # Neither the card nor the report copy counts as the model.
    assert model_card.model_digest(version) == digest
    # Linking again (a re-run of the report) replaces the copy, no stale files.
    (report / "report.json").unlink()
    model_card.link_report(str(version), report, "/out/report/13/index.html", "run-<1>")
    assert not (copy / "report.json").exists()
    assert "/out/report/13/index.html." in card.read_text()
    assert not list((version / "assets.extra").glob(".*"))


def test_a_version_without_a_card_is_not_linked(tmp_path):
    version = tmp_path / "serving" / "mnist" / "3"
    shutil.copytree(_export(tmp_path), version)
    try:
        model_card.link_report(str(version), _report(tmp_path), "/r/index.html", "run")
    except FileNotFoundError as error:
        assert str(error) == (
            f"{version}/assets.extra/model_card.md: no model card in version {version}"
        )
    else:
        raise AssertionError("expected FileNotFoundError")
    assert not (version / "assets.extra" / "evaluation_report").exists()
