"""The ``EvaluationReport`` component (``components/evaluation_report/``) on real
artifacts (tests/report_fixture.py): what its executor writes into the output
artifact and states about the run (facts, push, ML Metadata ids), the execution id
it reads from its context, and the component wired into the pipeline and run
under LocalDagRunner, where ML Metadata ids are real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.evaluation_report.component import EvaluationReport, EvaluationReportArtifact
from components.evaluation_report.executor import execution_id_of, report_html_path
from report.figures import png_size
from tests.report_fixture import (
    DATASETS,
    EXECUTION_ID,
    FIGURES,
    GATES,
    INPUT_IDS,
    NODE_ID,
    PIPELINE_NAME,
    RUN_ID,
    ReportRun,
    report_run,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=DATASETS)
def run(request, tmp_path_factory) -> ReportRun:
    return report_run(request.param, tmp_path_factory)


def test_report_files_are_written_into_the_artifact(run):
    assert report_html_path(run.artifact.uri) == str(run.directory / "index.html")
    names = {p.name for p in run.directory.iterdir()}
    assert names == FIGURES | {"index.html", "report.json"}
    assert set(run.report["figures"].values()) == FIGURES
    for name in FIGURES:
        width, height = png_size((run.directory / name).read_bytes())
        assert width > 300 and height > 200, (name, width, height)
    assert run.artifact.get_string_custom_property("html_file") == "index.html"
    assert run.artifact.get_int_custom_property("test_examples") == 200
    assert run.artifact.get_int_custom_property("tfma_agrees") == 1
    assert run.artifact.get_float_custom_property("accuracy") == pytest.approx(
        run.report["tfma"]["overall_accuracy"]
    )


def test_report_json_holds_the_runs_facts(run):
    facts = run.report["facts"]
    inputs = run.inputs
    assert facts["dataset"] == inputs.dataset
    assert facts["class_names"] == list(inputs.class_names)
    assert facts["model"] == "cnn_model_fn"
    assert facts["hparams"] == inputs.hparams
    assert facts["hparams"]["epochs"] == 3 and facts["hparams"]["batch_size"] == 50
    assert facts["example_counts"] == {"train": 275, "validation": 25, "test": 200}
    assert facts["blessed"] is inputs.blessed
    assert facts["mlmd"] == {
        "pipeline": PIPELINE_NAME,
        "run_id": RUN_ID,
        "node": NODE_ID,
        "execution_id": EXECUTION_ID,
        "input_artifact_ids": INPUT_IDS,
        "baseline_model_id": INPUT_IDS["model"] if GATES[inputs.dataset]["baseline"] else None,
    }
    stats = json.loads(
        (Path(inputs.artifacts["model_run"].uri) / "training_stats.json").read_text()
    )
    assert run.report["training"] == stats
    assert len(stats["history"]["val_loss"]) == 3
    # The Trainer validated on the validation split (eval_args), not on test.
    assert (stats["train_examples"], stats["validation_examples"]) == (275, 25)


def test_report_json_holds_the_push(run):
    facts = run.report["facts"]
    pushed = run.inputs.artifacts["pushed_model"]
    if run.inputs.blessed:
        assert facts["pushed"] is True
        assert facts["pushed_version"] == pushed.get_string_custom_property("pushed_version")
        assert facts["pushed_path"] == pushed.get_string_custom_property("pushed_destination")
        assert Path(facts["pushed_path"], "saved_model.pb").exists()
        assert f"version {facts['pushed_version']} at {facts['pushed_path']}" in run.html
    else:
        assert facts["pushed"] is False and facts["pushed_version"] is None
        assert "nothing (the model was not blessed)" in run.html


def test_execution_id_comes_from_the_executor_context(tmp_path):
    context = EvaluationReport.EXECUTOR_SPEC.executor_class.Context
    assert execution_id_of(context(tmp_dir=str(tmp_path), unique_id="17")) == 17
    assert execution_id_of(context(tmp_dir=str(tmp_path), unique_id="not-a-number")) is None
    assert execution_id_of(context()) is None
    assert execution_id_of(None) is None


# ------------------------------------------------- in the pipeline, for real


def test_component_wires_after_the_pusher_and_compiles(tmp_path):
    from tfx.dsl.compiler import compiler

    from pipeline.pipeline import create_pipeline
    from pipeline.settings import (
        DataSettings,
        PipelinePaths,
        PipelineSettings,
        ReleaseSettings,
        TrainingSettings,
    )

    full = create_pipeline(
        PipelinePaths(
            pipeline_name="p",
            pipeline_root=str(tmp_path / "root"),
            data_root=str(tmp_path / "data"),
            serving_model_dir=str(tmp_path / "serving"),
        ),
        PipelineSettings(
            data=DataSettings(dataset="mnist", class_names=tuple(str(i) for i in range(10))),
            training=TrainingSettings(hparams={"epochs": 1}),
            release=ReleaseSettings(min_accuracy=0.9),
        ),
    )
    assert full.components[-1].id == NODE_ID
    ir = compiler.Compiler().compile(full)
    node = next(n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == NODE_ID)
    producers = {
        key: spec.channels[0].producer_node_query.id for key, spec in node.inputs.inputs.items()
    }
    assert producers == {
        "examples": "ExampleGen",
        "model": "Trainer",
        "model_run": "Trainer",
        "evaluation": "Evaluator",
        "blessing": "Evaluator",
        "pushed_model": "Pusher",
    }
    assert "Pusher" in node.upstream_nodes
    report_type = node.outputs.outputs["report"].artifact_spec.type
    assert report_type.name == EvaluationReportArtifact.TYPE_NAME


def test_local_dag_runner_records_the_report_in_ml_metadata(tmp_path, tmp_path_factory):
    """Importers hand the built artifacts to the component under LocalDagRunner with a
    SQLite store: the report names the real execution and artifact ids."""
    from ml_metadata import metadata_store
    from tfx.types import standard_artifacts
    from tfx.v1 import dsl, orchestration

    from components.evaluation_report.executor import INPUT_KEYS

    inputs = report_run("mnist", tmp_path_factory).inputs
    artifacts = inputs.artifacts
    types = {
        "examples": standard_artifacts.Examples,
        "model": standard_artifacts.Model,
        "model_run": standard_artifacts.ModelRun,
        "evaluation": standard_artifacts.ModelEvaluation,
        "blessing": standard_artifacts.ModelBlessing,
        "pushed_model": standard_artifacts.PushedModel,
    }
    importers = {}
    for key in INPUT_KEYS:
        artifact = artifacts[key]
        importers[key] = dsl.Importer(
            source_uri=artifact.uri,
            artifact_type=types[key],
            properties={"split_names": artifact.split_names} if key == "examples" else None,
            custom_properties={
                name: artifact.get_custom_property(name)
                for name in ("blessed", "pushed", "pushed_version", "pushed_destination")
                if artifact.has_custom_property(name)
            },
        ).with_id(f"import_{key}")
    report_node = EvaluationReport(
        **{key: importer.outputs["result"] for key, importer in importers.items()},
        dataset=inputs.dataset,
        class_names=inputs.class_names,
        hparams=inputs.hparams,
    )
    metadata_path = tmp_path / "metadata.sqlite"
    orchestration.LocalDagRunner().run(
        dsl.Pipeline(
            pipeline_name="report_only",
            pipeline_root=str(tmp_path / "root"),
            components=[*importers.values(), report_node],
            metadata_connection_config=orchestration.metadata.sqlite_metadata_connection_config(
                str(metadata_path)
            ),
            enable_cache=False,
        )
    )

    config = orchestration.metadata.sqlite_metadata_connection_config(str(metadata_path))
    store = metadata_store.MetadataStore(config)
    node = store.get_context_by_type_and_name("node", f"report_only.{NODE_ID}")
    (execution,) = store.get_executions_by_context(node.id)
    events = store.get_events_by_execution_ids([execution.id])
    ids = {e.path.steps[0].key: e.artifact_id for e in events}
    (output,) = store.get_artifacts_by_id([ids["report"]])
    (report_type,) = store.get_artifact_types_by_id([output.type_id])
    assert report_type.name == EvaluationReportArtifact.TYPE_NAME
    assert output.custom_properties["html_file"].string_value == "index.html"

    written = json.loads(Path(output.uri, "report.json").read_text())
    mlmd = written["facts"]["mlmd"]
    assert mlmd["execution_id"] == execution.id
    assert mlmd["pipeline"] == "report_only" and mlmd["node"] == NODE_ID and mlmd["run_id"]
    assert mlmd["input_artifact_ids"] == {key: ids[key] for key in INPUT_KEYS}
    same_inputs = report_run("mnist", tmp_path_factory).report
    assert written["confusion_matrix"] == same_inputs["confusion_matrix"]
    assert Path(report_html_path(output.uri)).exists()
