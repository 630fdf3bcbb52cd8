"""Real pipeline artifacts for the evaluation-report tests, made from the committed
fixture by the pipeline's own code: ExampleGen's executor over the fixture's
TFRecords (train and validation cut from the training images as ingest cuts them,
test the official test images), a Transform output (``tests/transform_fixture.py``), the Trainer's
``run_fn`` (a short real training run with its ``training_stats.json`` and the
serving export), the stock Evaluator executor with ``make_eval_config`` (TFMA on
Beam), and the Pusher executor.

Building one dataset's artifacts takes about half a minute, so ``report_inputs``
and ``report_run`` (the report executor run on them) keep what they built for the
rest of the test session: every report test module shares it. Also here: checks
the report's tests make from sources the report does not use (``exported_model_outputs``,
``tfma_per_class``) and the page's start tags (``html_tags``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils
from tfx.components.evaluator import executor as evaluator_executor
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.proto import example_gen_pb2
from tfx.proto.orchestration import pipeline_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils, path_utils, proto_utils

from components.evaluation_report.component import EvaluationReportArtifact
from components.evaluation_report.executor import EvaluationReportExecutor
from components.example_gen.executor import Executor as ExampleGenExecutor
from components.pusher.executor import AtomicPushExecutor
from ingest.convert import hold_out_validation, write_split
from ingest.datasets import get_dataset
from ingest.idx import read_idx_pair
from pipeline.pipeline import make_eval_config
from tests.transform_fixture import RAW_FEATURE_SPEC, build_transform_output
from trainer.hparams import HParams
from trainer.task import run_fn

FIXTURES = Path(__file__).parent / "fixtures"
DATASETS = ["mnist", "fashion_mnist"]
# Every PNG a report on the fixture writes (both datasets have mistakes and a history).
FIGURES = {
    "class_accuracy.png",
    "confusion_matrix.png",
    "predictions.png",
    "confident_mistakes.png",
    "training_curves.png",
}
BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
# Three short epochs: enough for a model that is right more often than not, and
# still wrong on some images, so every part of the report has something to show.
HPARAMS = {"batch_size": 50, "epochs": 3, "seed": 42}

# MNIST is evaluated against a baseline (itself), so TFMA's metrics are under the
# model name 'candidate', with floors it passes: blessed and pushed. Fashion-MNIST
# has no baseline and an overall floor no briefly trained model reaches: not
# blessed, nothing pushed.
GATES = {
    "mnist": {"baseline": True, "min_accuracy": 0.3, "min_class_accuracy": {1: 0.2}},
    "fashion_mnist": {"baseline": False, "min_accuracy": 0.99, "min_class_accuracy": {6: 0.05}},
}
# Distinct ML Metadata ids for the inputs, as the orchestrator would have assigned.
INPUT_IDS = {
    "examples": 11,
    "model": 12,
    "model_run": 13,
    "evaluation": 14,
    "blessing": 15,
    "pushed_model": 16,
}


@dataclass
class ReportInputs:
    """One dataset's artifacts, as the report component receives them."""

    dataset: str
    class_names: tuple[str, ...]
    hparams: dict
    root: Path
    test_images: np.ndarray
    test_labels: np.ndarray
    artifacts: dict[str, standard_artifacts.Artifact]
    blessed: bool

    @property
    def input_dict(self) -> dict[str, list]:
        return {key: [artifact] for key, artifact in self.artifacts.items()}

    @property
    def serving_model_dir(self) -> str:
        return path_utils.serving_model_path(self.artifacts["model"].uri)


@dataclass
class ReportRun:
    """The report executor's run on one dataset's ``ReportInputs``."""

    inputs: ReportInputs
    artifact: EvaluationReportArtifact
    directory: Path
    report: dict
    html: str


# What the orchestrator would tell the executor about this execution.
EXECUTION_ID = 4242
PIPELINE_NAME = "report_test_pipeline"
NODE_ID = "EvaluationReport"
RUN_ID = "run-2024"

_BUILT: dict[str, ReportInputs] = {}
_RUNS: dict[str, ReportRun] = {}


def report_run(dataset: str, factory: pytest.TempPathFactory) -> ReportRun:
    """The report of ``dataset``'s artifacts, written once per test session."""
    if dataset not in _RUNS:
        inputs = report_inputs(dataset, factory)
        directory = factory.mktemp(f"report_{dataset}") / "EvaluationReport"
        artifact = EvaluationReportArtifact()
        artifact.uri = str(directory)
        context = EvaluationReportExecutor.Context(
            tmp_dir=str(inputs.root / "tmp"),
            unique_id=str(EXECUTION_ID),
            pipeline_info=pipeline_pb2.PipelineInfo(id=PIPELINE_NAME),
            pipeline_node=pipeline_pb2.PipelineNode(node_info=pipeline_pb2.NodeInfo(id=NODE_ID)),
            pipeline_run_id=RUN_ID,
        )
        EvaluationReportExecutor(context).Do(
            inputs.input_dict, {"report": [artifact]}, report_exec_properties(inputs)
        )
        _RUNS[dataset] = ReportRun(
            inputs=inputs,
            artifact=artifact,
            directory=directory,
            report=json.loads((directory / "report.json").read_text()),
            html=(directory / "index.html").read_text(encoding="utf-8"),
        )
    return _RUNS[dataset]


def report_exec_properties(inputs: ReportInputs) -> dict:
    """The exec properties EvaluationReport(...) gives its executor."""
    return {
        "dataset": inputs.dataset,
        "class_names": json.dumps(list(inputs.class_names)),
        "hparams": json.dumps(inputs.hparams, sort_keys=True),
    }


def report_inputs(dataset: str, factory: pytest.TempPathFactory) -> ReportInputs:
    """The artifacts of ``dataset``, built once per test session."""
    if dataset not in _BUILT:
        _BUILT[dataset] = _build(dataset, factory.mktemp(f"report_inputs_{dataset}"))
    return _BUILT[dataset]


def _artifact(cls: type, uri: Path, artifact_id: int):
    artifact = cls()
    artifact.uri = str(uri)
    artifact.id = artifact_id
    uri.mkdir(parents=True, exist_ok=True)
    return artifact


def _fixture_splits(dataset: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The three splits of the fixture, as ``mnist-tfx ingest`` cuts them."""
    source = FIXTURES / dataset
    official = {
        prefix: read_idx_pair(
            source / f"{prefix}-images-idx3-ubyte.gz", source / f"{prefix}-labels-idx1-ubyte.gz"
        )
        for prefix in ("train", "t10k")
    }
    train, validation, _ = hold_out_validation(*official["train"])
    return {"train": train, "validation": validation, "test": official["t10k"]}


def _example_gen(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]):
    for split, (images, labels) in splits.items():
        write_split(images, labels, root / "tfrecords" / split, num_shards=1)
    examples = _artifact(standard_artifacts.Examples, root / "ExampleGen", INPUT_IDS["examples"])
    config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=split, pattern=f"{split}/*") for split in splits]
    )
    ExampleGenExecutor(ExampleGenExecutor.Context(beam_pipeline_args=BEAM_ARGS)).Do(
        {},
        {"examples": [examples]},
        {
            "input_base": str(root / "tfrecords"),
            "input_config": proto_utils.proto_to_json(config),
            "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
            "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
            "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        },
    )
    return examples


def _schema(root: Path) -> standard_artifacts.Schema:
    schema = _artifact(standard_artifacts.Schema, root / "SchemaGen", 10)
    io_utils.write_pbtxt_file(
        str(root / "SchemaGen" / "schema.pbtxt"),
        schema_utils.schema_from_feature_spec(RAW_FEATURE_SPEC),
    )
    return schema


def _train(root, examples, class_names, train_images, train_labels):
    build_transform_output(root, train_images, train_labels)
    model = _artifact(standard_artifacts.Model, root / "Trainer" / "model", INPUT_IDS["model"])
    model_run = _artifact(
        standard_artifacts.ModelRun, root / "Trainer" / "model_run", INPUT_IDS["model_run"]
    )
    split_uri = artifact_utils.get_split_uri
    run_fn(
        FnArgs(
            train_files=[io_utils.all_files_pattern(split_uri([examples], "train"))],
            eval_files=[io_utils.all_files_pattern(split_uri([examples], "validation"))],
            transform_output=str(root / "transform_output"),
            serving_model_dir=path_utils.serving_model_path(model.uri),
            model_run_dir=model_run.uri,
            custom_config={"hparams": HPARAMS, "class_names": list(class_names)},
        )
    )
    return model, model_run


def _evaluate(root, dataset, examples, schema, model):
    gate = GATES[dataset]
    evaluation = _artifact(
        standard_artifacts.ModelEvaluation,
        root / "Evaluator" / "evaluation",
        INPUT_IDS["evaluation"],
    )
    blessing = _artifact(
        standard_artifacts.ModelBlessing, root / "Evaluator" / "blessing", INPUT_IDS["blessing"]
    )
    inputs = {"examples": [examples], "model": [model], "schema": [schema]}
    if gate["baseline"]:
        inputs["baseline_model"] = [model]
    eval_config = make_eval_config(gate["min_accuracy"], gate["min_class_accuracy"], 0.0)
    executor = evaluator_executor.Executor(
        evaluator_executor.Executor.Context(beam_pipeline_args=BEAM_ARGS)
    )
    executor.Do(
        inputs,
        {"evaluation": [evaluation], "blessing": [blessing]},
        {
            "eval_config": proto_utils.proto_to_json(eval_config),
            "example_splits": json.dumps(["test"]),
        },
    )
    return evaluation, blessing


def _push(root, model, blessing):
    pushed = _artifact(standard_artifacts.PushedModel, root / "Pusher", INPUT_IDS["pushed_model"])
    AtomicPushExecutor().Do(
        {"model": [model], "model_blessing": [blessing]},
        {"pushed_model": [pushed]},
        {
            "push_destination": json.dumps(
                {"filesystem": {"base_directory": str(root / "serving")}}
            ),
            "custom_config": json.dumps({"keep_versions": 2}),
        },
    )
    return pushed


def _build(dataset: str, root: Path) -> ReportInputs:
    class_names = get_dataset(dataset).class_names
    splits = _fixture_splits(dataset)
    train_images, train_labels = splits["train"]
    test_images, test_labels = splits["test"]
    examples = _example_gen(root, splits)
    schema = _schema(root)
    model, model_run = _train(root, examples, class_names, train_images, train_labels)
    evaluation, blessing = _evaluate(root, dataset, examples, schema, model)
    pushed = _push(root, model, blessing)
    return ReportInputs(
        dataset=dataset,
        class_names=class_names,
        # What the pipeline passes: every hyperparameter, defaults included.
        hparams=HParams.from_params(HPARAMS).to_params(),
        root=root,
        test_images=test_images,
        test_labels=test_labels.astype(np.int64),
        artifacts={
            "examples": examples,
            "model": model,
            "model_run": model_run,
            "evaluation": evaluation,
            "blessing": blessing,
            "pushed_model": pushed,
        },
        blessed=bool(blessing.get_int_custom_property("blessed")),
    )


def exported_model_outputs(run: ReportRun) -> dict[str, np.ndarray]:
    """The exported model called by the test itself, on the fixture's test images as
    raw pixels (``predict_pixels_uint8``; the report uses ``serving_default``)."""
    loaded = tf.saved_model.load(run.inputs.serving_model_dir)
    outputs = loaded.signatures["predict_pixels_uint8"](images=tf.constant(run.inputs.test_images))
    return {key: value.numpy() for key, value in outputs.items()}


def tfma_per_class(run: ReportRun) -> tuple[dict[int, float], dict[int, int]]:
    """TFMA's per-class accuracy and counts through its view API, not the report's reader."""
    import tensorflow_model_analysis as tfma

    model_name = "candidate" if GATES[run.inputs.dataset]["baseline"] else None
    result = tfma.load_eval_result(run.inputs.artifacts["evaluation"].uri, model_name=model_name)
    accuracy, counts = {}, {}
    for slice_key, metrics in result.slicing_metrics:
        if len(slice_key) == 1 and slice_key[0][0] == "label":
            values = metrics[""][""]
            accuracy[int(slice_key[0][1])] = values["sparse_categorical_accuracy"]["doubleValue"]
            counts[int(slice_key[0][1])] = int(values["example_count"]["doubleValue"])
    return accuracy, counts


class _Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def html_tags(html_text: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every start tag of ``html_text`` with its attributes, in document order."""
    parser = _Tags()
    parser.feed(html_text)
    return parser.tags
