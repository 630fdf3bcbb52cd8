"""Data that arrives over time: ``mnist-tfx ingest`` writes spans, ExampleGen reads
the latest, ``--spans K`` trains on the latest K, and a run with nothing new pushes
nothing new."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ingest.convert import MANIFEST_FILE, load_conversion
from ingest.spans import ingest_span, list_spans, parse_slice, span_dir
from tests.pipeline_fixture import FIXTURES, fail_text, listing, run_cli

# ---------------------------------------------------------------- ingest


def test_ingest_numbers_spans_and_keeps_the_test_split_whole(tmp_path):
    root = tmp_path / "tfrecords"
    assert list_spans(root) == []
    span, first = ingest_span(FIXTURES / "mnist", root, "mnist", train_slice=(0, 100))
    assert span == 0 and first.output_dir == span_dir(root, 0) == root / "span-0"
    # 100 / 12 = 8.3: 8 held out of the slice for validation.
    assert first.counts == {"train": 92, "validation": 8, "test": 200}
    span, second = ingest_span(FIXTURES / "mnist", root, "mnist", train_slice=(100, 300))
    assert span == 1 and second.counts == {"train": 183, "validation": 17, "test": 200}
    manifest = json.loads((root / "span-1" / MANIFEST_FILE).read_text())
    assert manifest["span"] == 1 and manifest["train_slice"] == [100, 300]
    # Validation is held out of the slice; its indices name the official training file.
    indices = manifest["validation"]["indices"]
    assert len(indices) == 17 and min(indices) >= 100 and max(indices) < 300
    # An explicit number may skip ahead; the next default follows the latest.
    assert ingest_span(FIXTURES / "mnist", root, "mnist", span=5)[0] == 5
    assert ingest_span(FIXTURES / "mnist", root, "mnist")[0] == 6
    assert list_spans(root) == [0, 1, 5, 6]
    assert load_conversion(root / "span-6").counts == {"train": 275, "validation": 25, "test": 200}


def test_spans_are_never_overwritten(tmp_path):
    root = tmp_path / "tfrecords"
    ingest_span(FIXTURES / "mnist", root, "mnist", train_slice=(0, 50))
    before = sorted(p.name for p in (root / "span-0" / "train").iterdir())
    with pytest.raises(FileExistsError, match=r"span-0: span 0 exists already; .* \(--span 1\)"):
        ingest_span(FIXTURES / "mnist", root, "mnist", span=0)
    assert sorted(p.name for p in (root / "span-0" / "train").iterdir()) == before
    assert load_conversion(root / "span-0").counts["train"] == 46  # 50 minus 4 for validation


def test_a_half_written_span_is_not_a_span(tmp_path):
    root = tmp_path / "tfrecords"
    (root / "span-3" / "train").mkdir(parents=True)  # no manifest: never finished
    (root / "notes").mkdir()
    assert list_spans(root) == []


def test_a_run_never_replaces_an_ingested_span(tmp_path):
    from pipeline.config import RunConfig
    from pipeline.local_runner import prepare_data

    config = RunConfig(dataset="mnist", data_dir=tmp_path, source=str(FIXTURES / "mnist"))
    ingest_span(FIXTURES / "mnist", config.tfrecord_dir, "mnist", train_slice=(0, 100))
    assert prepare_data(config) == config.tfrecord_dir
    assert list_spans(config.tfrecord_dir) == [0]
    assert load_conversion(span_dir(config.tfrecord_dir, 0)).counts["train"] == 92


def test_a_run_without_spans_converts_into_span_0(tmp_path):
    from pipeline.config import RunConfig
    from pipeline.local_runner import prepare_data

    config = RunConfig(dataset="mnist", data_dir=tmp_path, source=str(FIXTURES / "mnist"))
    prepare_data(config)
    assert list_spans(config.tfrecord_dir) == [0]
    assert load_conversion(span_dir(config.tfrecord_dir, 0)).counts == {
        "train": 275,
        "validation": 25,
        "test": 200,
    }


@pytest.mark.parametrize("text", ["5:2", "3", "a:b", ":4", "4:4"])
def test_bad_slices_are_refused(text):
    with pytest.raises(ValueError, match="expected START:END with 0 <= START < END"):
        parse_slice(text)


def test_a_slice_beyond_the_data_names_the_size(tmp_path):
    with pytest.raises(ValueError, match=r"--slice 0:999: the training set in .* has 300"):
        ingest_span(FIXTURES / "mnist", tmp_path, "mnist", train_slice=(0, 999))
    assert list_spans(tmp_path) == []


def test_a_slice_too_small_for_a_validation_split_is_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"--slice 10:15: 5 training examples leave no validation examples"
    ):
        ingest_span(FIXTURES / "mnist", tmp_path, "mnist", train_slice=(10, 15))
    assert list_spans(tmp_path) == []


def test_the_same_slice_holds_out_the_same_validation_examples(tmp_path):
    """Deterministic: ingesting the same slice twice records the same indices."""
    ingest_span(FIXTURES / "mnist", tmp_path, "mnist", train_slice=(0, 120))
    ingest_span(FIXTURES / "mnist", tmp_path, "mnist", train_slice=(0, 120))
    first, second = (load_conversion(span_dir(tmp_path, span)).validation for span in (0, 1))
    assert first["indices"] == second["indices"] and len(first["indices"]) == 10
    assert first["indices_sha256"] == second["indices_sha256"]


# ---------------------------------------------------------------- runs over spans


def _ingest(root: Path, *args: str) -> None:
    proc = run_cli(
        "ingest",
        "--dataset",
        "mnist",
        "--source",
        str(FIXTURES / "mnist"),
        "--data-dir",
        str(root / "data"),
        *args,
        cwd=root,
    )
    assert proc.returncode == 0, fail_text(proc)


def _run(root: Path, name: str, *args: str) -> tuple[dict, str]:
    summary_path = root / f"{name}.json"
    proc = run_cli(
        "run",
        "--dataset",
        "mnist",
        "--data-dir",
        str(root / "data"),
        "--output-root",
        str(root / "out"),
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--min-accuracy",
        "0.1",
        "--min-class-accuracy",
        "0",
        # The gate is tested elsewhere; here every new span's model may be pushed.
        "--max-accuracy-drop",
        "1",
        "--summary-json",
        str(summary_path),
        *args,
        cwd=root,
    )
    assert proc.returncode == 0, fail_text(proc)
    return json.loads(summary_path.read_text()), proc.stdout


def _trainer_input_spans(metadata: Path) -> list[list[int]]:
    """Per Trainer execution that trained (not a cache hit), the spans it read."""
    with sqlite3.connect(metadata) as db:
        rows = db.execute(
            "SELECT ev.execution_id, ap.int_value FROM Event ev "
            "JOIN Execution ex ON ev.execution_id = ex.id "
            "JOIN Type t ON ex.type_id = t.id "
            "JOIN ArtifactProperty ap ON ap.artifact_id = ev.artifact_id AND ap.name = 'span' "
            # Event type 3: INPUT; execution state 3: COMPLETE.
            "WHERE t.name LIKE '%Trainer' AND ev.type = 3 AND ex.last_known_state = 3 "
            "ORDER BY ev.execution_id"
        ).fetchall()
    by_execution: dict[int, list[int]] = {}
    for execution_id, span in rows:
        by_execution.setdefault(execution_id, []).append(span)
    return [sorted(spans) for spans in by_execution.values()]


@pytest.mark.e2e
@pytest.mark.slow
def test_runs_follow_the_latest_span_and_push_nothing_without_new_data(tmp_path):
    _ingest(tmp_path, "--slice", "0:150")
    first, stdout = _run(tmp_path, "first")
    assert first["span"] == 0 and first["training_spans"] == [0]
    assert first["example_counts"] == {"train": 137, "validation": 13, "test": 200}
    assert "data: span 0 (trained on span(s) 0)" in stdout
    serving = tmp_path / "out" / "serving" / "mnist"
    after_first = listing(serving)

    # Nothing new: nothing trained again, nothing new pushed.
    again, _ = _run(tmp_path, "again")
    states = {c["name"]: c["state"] for c in again["components"]}
    assert states["ExampleGen"] == states["Transform"] == states["Trainer"] == "CACHED"
    assert again["pushed_version"] == first["pushed_version"]
    assert listing(serving) == after_first

    # A new span; with --spans 2 the Trainer learns from both, the rest reads span 1.
    _ingest(tmp_path, "--slice", "150:300")
    second, stdout = _run(tmp_path, "second", "--spans", "2")
    assert second["span"] == 1 and second["training_spans"] == [0, 1]
    assert second["example_counts"]["train"] == 137  # statistics of the latest span
    assert "data: span 1 (trained on span(s) 0, 1)" in stdout
    metadata = tmp_path / "out" / "mnist_cnn" / "metadata.sqlite"
    assert _trainer_input_spans(metadata) == [[0], [0, 1]]
    assert second["pushed_version"] != first["pushed_version"]
    versions = run_cli(
        "versions", "--dataset", "mnist", "--output-root", str(tmp_path / "out"), cwd=tmp_path
    )
    assert versions.returncode == 0, fail_text(versions)
    assert f"data span 1 of {tmp_path / 'data' / 'tfrecords' / 'mnist'}" in versions.stdout
