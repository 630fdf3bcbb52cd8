"""What a pipeline run did, read back from ML Metadata: which components ran or
were cached and for how long, example counts, accuracy overall and per class
(the Evaluator's own TFMA numbers), the blessing and the pushed version.

Reads only; formatting for people lives in ``format_summary``; the CLI prints it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

ACCURACY_KEY = "sparse_categorical_accuracy"
_STATE_NAMES = {
    metadata_store_pb2.Execution.State.Value(name): name
    for name in metadata_store_pb2.Execution.State.keys()  # noqa: SIM118 - enum wrapper, not a dict
}


@dataclass
class ComponentRun:
    name: str
    state: str
    seconds: float
    execution_id: int


@dataclass
class RunSummary:
    pipeline_name: str
    run_id: str
    components: list[ComponentRun] = field(default_factory=list)
    example_counts: dict[str, int] = field(default_factory=dict)
    # The span ExampleGen read, and the spans the Trainer learned from (--spans).
    span: int | None = None
    training_spans: list[int] = field(default_factory=list)
    accuracy: float | None = None
    per_class_accuracy: dict[int, float] = field(default_factory=dict)
    per_class_count: dict[int, int] = field(default_factory=dict)
    blessed: bool | None = None
    pushed: bool = False
    pushed_version: str | None = None
    pushed_path: str | None = None
    # The blessed model was already the newest version, so no copy was published.
    push_reused_version: bool = False
    # The Pusher was answered from TFX's cache: the push is an earlier run's, this run
    # published nothing.
    push_cached: bool = False
    training: dict[str, Any] | None = None
    class_names: list[str] = field(default_factory=list)
    wall_seconds: float | None = None
    gate_failures: list[str] = field(default_factory=list)
    # The EvaluationReport component's index.html (components/evaluation_report/executor.py).
    report_path: str | None = None

    @property
    def all_cached(self) -> bool:
        # Resolver nodes pick inputs on every run; they have nothing to cache.
        work = [c for c in self.components if not c.name.endswith("_resolver")]
        return bool(work) and all(c.state == "CACHED" for c in work)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def open_store(
    metadata: str | os.PathLike | metadata_store_pb2.ConnectionConfig,
) -> metadata_store.MetadataStore:
    """Read-only store from a SQLite path, ``sqlite:///path``, ``mysql://...`` or a
    ConnectionConfig (``pipeline/metadata_config.py``)."""
    from pipeline.metadata_config import metadata_connection_config, open_metadata_store

    if not isinstance(metadata, metadata_store_pb2.ConnectionConfig):
        metadata = metadata_connection_config(metadata)
    return open_metadata_store(metadata, read_only=True)


def latest_run_context(
    store: metadata_store.MetadataStore, pipeline_name: str
) -> metadata_store_pb2.Context:
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        raise LookupError(f"no pipeline named {pipeline_name!r} in this metadata store")
    runs = [
        c for c in store.get_children_contexts_by_context(pipeline.id) if c.type == "pipeline_run"
    ] or store.get_contexts_by_type("pipeline_run")
    if not runs:
        raise LookupError(f"pipeline {pipeline_name!r} has no runs in this metadata store")
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def node_name_of(store: metadata_store.MetadataStore, execution_id: int, pipeline_name: str) -> str:
    for context in store.get_contexts_by_execution(execution_id):
        if context.type == "node" and context.name.startswith(pipeline_name + "."):
            return context.name[len(pipeline_name) + 1 :]
    return "?"


def output_artifacts(
    store: metadata_store.MetadataStore,
    execution_id: int,
    kinds: tuple[int, ...] = (
        metadata_store_pb2.Event.OUTPUT,
        metadata_store_pb2.Event.DECLARED_OUTPUT,
    ),
) -> dict[str, list[metadata_store_pb2.Artifact]]:
    """The execution's artifacts by key: its outputs, or with ``kinds`` its inputs."""
    events = store.get_events_by_execution_ids([execution_id])
    outputs = [e for e in events if e.type in kinds]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in outputs])}
    by_key: dict[str, list[metadata_store_pb2.Artifact]] = {}
    for event in outputs:
        key = event.path.steps[0].key if event.path.steps else ""
        by_key.setdefault(key, []).append(artifacts[event.artifact_id])
    return by_key


def span_of(artifact: metadata_store_pb2.Artifact) -> int | None:
    """ExampleGen's span of an Examples artifact (a property of that type, or a
    custom property where the type was registered without it)."""
    for properties in (artifact.properties, artifact.custom_properties):
        if "span" in properties:
            value = properties["span"]
            return value.int_value if value.HasField("int_value") else int(value.string_value)
    return None


def custom_property(artifact: metadata_store_pb2.Artifact, name: str) -> Any:
    if name not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[name]
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def read_example_counts(statistics_uri: str) -> dict[str, int]:
    import tensorflow_data_validation as tfdv

    counts = {}
    for split in ("train", "validation", "test"):
        path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
        if os.path.exists(path):
            stats = tfdv.load_stats_binary(path)
            counts[split] = int(stats.datasets[0].num_examples)
    return counts


def _candidate_model_name(evaluation_uri: str) -> str | None:
    """'candidate' when the Evaluator compared against a baseline, else None."""
    path = os.path.join(evaluation_uri, "eval_config.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return "candidate" if '"candidate"' in text else None


def read_accuracy(evaluation_uri: str) -> tuple[float | None, dict[int, float], dict[int, int]]:
    """Overall accuracy and per-label accuracy and example count, as TFMA wrote them."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(evaluation_uri, model_name=_candidate_model_name(evaluation_uri))
    overall, per_class, counts = None, {}, {}
    for slice_key, metrics in result.slicing_metrics:
        values = metrics.get("", {}).get("", {})
        accuracy = values.get(ACCURACY_KEY, {}).get("doubleValue")
        count = values.get("example_count", {}).get("doubleValue")
        if not slice_key:
            overall = accuracy
        elif len(slice_key) == 1 and slice_key[0][0] == "label":
            label = int(slice_key[0][1])
            per_class[label] = accuracy
            if count is not None:
                counts[label] = int(count)
    return overall, dict(sorted(per_class.items())), dict(sorted(counts.items()))


def _describe_slice(slice_key: Any, class_names: Sequence[str]) -> str:
    parts = list(slice_key.single_slice_keys)
    if not parts:
        return "overall"
    described = []
    for part in parts:
        value = part.int64_value if part.HasField("int64_value") else part.bytes_value.decode()
        if part.column == "label" and str(value).isdigit() and int(value) < len(class_names):
            described.append(f"class {value} ({class_names[int(value)]})")
        else:
            described.append(f"{part.column}={value}")
    return ", ".join(described)


def read_gate_failures(
    evaluation_uri: str, candidate_accuracy: float | None, class_names: Sequence[str]
) -> list[str]:
    """Why TFMA refused to bless: one line per failed threshold, with the numbers."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    if result.validation_ok:
        return []
    lines = []
    for per_slice in result.metric_validations_per_slice:
        where = _describe_slice(per_slice.slice_key, class_names)
        for failure in per_slice.failures:
            value = failure.metric_value.double_value.value
            threshold = failure.metric_threshold
            if failure.metric_key.is_diff:
                bound = threshold.change_threshold.absolute.value
                baseline = (
                    f", baseline {candidate_accuracy - value:.4f}" if candidate_accuracy else ""
                )
                lines.append(
                    f"{where}: accuracy fell below the served model's: candidate "
                    f"{candidate_accuracy:.4f}{baseline}, change {value:+.4f}, "
                    f"allowed change >= {bound:+.4f}"
                )
            else:
                bound = threshold.value_threshold.lower_bound.value
                lines.append(f"{where}: accuracy {value:.4f} is below the floor {bound:.4f}")
    for missing in result.missing_slices:
        lines.append(f"slice {missing} named in a threshold had no examples")
    return lines or ["the Evaluator's validation failed (see validations in the evaluation output)"]


def summarize_run(
    metadata_path: str, pipeline_name: str, class_names: Sequence[str] = ()
) -> RunSummary:
    store = open_store(metadata_path)
    run = latest_run_context(store, pipeline_name)
    class_names = list(class_names) or [str(i) for i in range(10)]
    summary = RunSummary(pipeline_name=pipeline_name, run_id=run.name, class_names=class_names)
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.id)
    for execution in executions:
        name = node_name_of(store, execution.id, pipeline_name)
        seconds = (
            execution.last_update_time_since_epoch - execution.create_time_since_epoch
        ) / 1000
        summary.components.append(
            ComponentRun(
                name, _STATE_NAMES.get(execution.last_known_state, "?"), seconds, execution.id
            )
        )
        outputs = output_artifacts(store, execution.id)
        if "examples" in outputs and name.startswith("ExampleGen"):
            summary.span = span_of(outputs["examples"][0])
        if name.startswith("Trainer"):
            inputs = output_artifacts(store, execution.id, (metadata_store_pb2.Event.INPUT,)).get(
                "examples", []
            )
            summary.training_spans = sorted(s for s in map(span_of, inputs) if s is not None)
        if "statistics" in outputs and name.startswith("StatisticsGen"):
            summary.example_counts = read_example_counts(outputs["statistics"][0].uri)
        if "evaluation" in outputs:
            uri = outputs["evaluation"][0].uri
            summary.accuracy, summary.per_class_accuracy, summary.per_class_count = read_accuracy(
                uri
            )
            summary.gate_failures = read_gate_failures(uri, summary.accuracy, class_names)
        if "blessing" in outputs:
            summary.blessed = bool(custom_property(outputs["blessing"][0], "blessed"))
        if "pushed_model" in outputs:
            pushed = outputs["pushed_model"][0]
            summary.pushed = bool(custom_property(pushed, "pushed"))
            summary.pushed_version = custom_property(pushed, "pushed_version")
            summary.pushed_path = custom_property(pushed, "pushed_destination")
            summary.push_reused_version = bool(custom_property(pushed, "reused_version"))
            summary.push_cached = execution.last_known_state == metadata_store_pb2.Execution.CACHED
        if "report" in outputs:
            from components.evaluation_report.executor import report_html_path

            summary.report_path = report_html_path(outputs["report"][0].uri)
        if "model_run" in outputs:
            stats_path = os.path.join(outputs["model_run"][0].uri, "training_stats.json")
            if os.path.exists(stats_path):
                with open(stats_path, encoding="utf-8") as f:
                    summary.training = json.load(f)
    return summary


def format_summary(summary: RunSummary, dataset: str) -> str:
    names = summary.class_names or [str(i) for i in range(10)]
    lines = [f"pipeline {summary.pipeline_name} (dataset {dataset}), run {summary.run_id}"]
    if summary.example_counts:
        counts = ", ".join(f"{k} {v:,}" for k, v in summary.example_counts.items())
        lines.append(f"examples: {counts}")
    if summary.span is not None:
        trained = ", ".join(map(str, summary.training_spans)) or str(summary.span)
        lines.append(f"data: span {summary.span} (trained on span(s) {trained})")
    if summary.accuracy is not None:
        lines.append(f"test accuracy: {summary.accuracy:.4f}")
        for label, accuracy in summary.per_class_accuracy.items():
            count = summary.per_class_count.get(label)
            suffix = f"  ({count} examples)" if count is not None else ""
            lines.append(f"  {label} {names[label]:<12} {accuracy:.4f}{suffix}")
    if summary.training:
        t = summary.training
        lines.append(
            f"training: {t['epochs']} epochs, {t['steps']} steps of {t['batch_size']}, "
            f"{t['fit_seconds']:.1f} s, {t['images_per_second']:.0f} images/s"
        )
    blessing = {True: "BLESSED", False: "NOT blessed", None: "no decision"}[summary.blessed]
    lines.append(f"evaluator: {blessing}")
    for failure in summary.gate_failures:
        lines.append(f"  failed: {failure}")
    if summary.pushed and summary.push_cached:
        lines.append(
            f"pushed: nothing new; Pusher cached, version {summary.pushed_version} at "
            f"{summary.pushed_path} is an earlier run's push of this model"
        )
    elif summary.pushed and summary.push_reused_version:
        lines.append(
            f"pushed: nothing new; version {summary.pushed_version} at {summary.pushed_path} "
            "already serves this model"
        )
    elif summary.pushed:
        lines.append(f"pushed: version {summary.pushed_version} at {summary.pushed_path}")
    else:
        lines.append("pushed: nothing (model not blessed or push cached)")
    if summary.report_path:
        lines.append(f"report: {Path(summary.report_path).resolve().as_uri()}")
    lines.append("component times (from ML Metadata):")
    width = max([18, *(len(c.name) for c in summary.components)])
    for component in summary.components:
        lines.append(f"  {component.name:<{width}} {component.state:<9} {component.seconds:7.1f} s")
    total = sum(c.seconds for c in summary.components)
    lines.append(f"  {'sum':<{width}} {'':<9} {total:7.1f} s")
    if summary.wall_seconds is not None:
        lines.append(f"wall time of the whole command: {summary.wall_seconds:.1f} s")
    return "\n".join(lines)
