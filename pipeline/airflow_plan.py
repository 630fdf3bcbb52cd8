"""The pipeline as Airflow 3 sees it: a plan (the nodes of the compiled pipeline IR
and their edges, for the DAG file to draw) and one node run at a time (what each
Airflow task does).

Airflow 3 runs in its own environment without TFX (TFX 1.16 caps Airflow below 3),
so the DAG file (``dags/mnist_tfx_airflow.py``) imports nothing of ours: it asks
``mnist-tfx airflow-plan`` for the plan and starts ``mnist-tfx run-node`` in this
environment for each task. Both go through the ``mnist-tfx run`` flags, the same
``RunConfig`` and ``build_pipeline`` as the local runner, so a setting cannot mean
one thing locally and another on Airflow.

How separate processes make one pipeline run: every compiled input channel asks
ML Metadata for artifacts in the contexts ``pipeline``, ``pipeline_run`` (named by
the runtime parameter ``pipeline-run-id``) and the producer's ``node``. Each task
compiles the same pipeline, sets ``pipeline-run-id`` to the Airflow run's id, marks
the IR for a partial run of its node alone (TFX's ``partial_run_utils.mark_pipeline``
with ``from_nodes = to_nodes = [node]``, the base run being this same run) and
launches it with ``LocalDagRunner.run_with_ir``, which skips every marked node. The
upstream artifacts are then exactly those the earlier tasks of this Airflow run
produced, the cache is TFX's own (keyed on inputs and properties, not on the run),
and the contexts are those the local runner writes, so ``mnist-tfx summary`` and
``versions`` read an Airflow run as they read a local one.

The partial run's snapshot is switched off: it copies a *base* run's outputs into
a new run as CACHED executions, and here the base run is the run itself, whose
upstream executions are already in its context; TFX would re-publish them as
CACHED, turning a Trainer that ran into one that did not.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ingest.errors import UsageError
from pipeline.config import RunConfig
from pipeline.metadata_config import describe_metadata, exclusive_store

# Bumped when the plan's fields change, so a DAG file can refuse a plan it cannot read.
PLAN_FORMAT = 1


@dataclass(frozen=True)
class PlanNode:
    """One node of the compiled pipeline: an Airflow task."""

    id: str
    # The nodes whose outputs it reads (the compiled IR's upstream_nodes).
    upstream: tuple[str, ...]
    # The TFX class, e.g. tfx.components.trainer.component.Trainer.
    type: str


def _compiled(config: RunConfig):
    """The pipeline IR of ``config``, as ``LocalDagRunner.run`` compiles it."""
    from tfx.orchestration.portable import tfx_runner

    from pipeline.local_runner import build_pipeline

    return tfx_runner._make_pipeline_proto(build_pipeline(config, config.tfrecord_dir))


def plan_nodes(config: RunConfig) -> list[PlanNode]:
    """The pipeline's nodes in topological order, each with its upstream nodes."""
    return [
        PlanNode(
            node.pipeline_node.node_info.id,
            tuple(sorted(node.pipeline_node.upstream_nodes)),
            node.pipeline_node.node_info.type.name,
        )
        for node in _compiled(config).nodes
    ]


def plan(config: RunConfig) -> dict[str, Any]:
    """What the DAG file needs: the DAG id (the pipeline's name) and the nodes and
    edges; the stores, for its description. The run flags are the DAG file's own:
    it passes the same ones to ``mnist-tfx run-node``."""
    return {
        "format": PLAN_FORMAT,
        "pipeline_name": config.name,
        "dataset": config.dataset,
        "metadata": describe_metadata(config.metadata_connection),
        "pipeline_root": str(config.pipeline_root.resolve()),
        "serving_model_dir": str(config.serving_model_dir),
        "nodes": [
            {"id": node.id, "upstream": list(node.upstream), "type": node.type}
            for node in plan_nodes(config)
        ],
    }


def plan_json(config: RunConfig) -> str:
    return json.dumps(plan(config), indent=2, sort_keys=True) + "\n"


def _marked_for(ir, node_id: str, pipeline_run_id: str):
    """``ir`` set to run ``node_id`` alone as part of run ``pipeline_run_id``."""
    from tfx.dsl.compiler import constants
    from tfx.orchestration.portable import partial_run_utils, runtime_parameter_utils
    from tfx.proto.orchestration import pipeline_pb2

    node_ids = [node.pipeline_node.node_info.id for node in ir.nodes]
    if node_id not in node_ids:
        raise UsageError(
            f"--node {node_id!r}: not a node of pipeline {ir.pipeline_info.id}; "
            f"expected one of {', '.join(node_ids)}"
        )
    runtime_parameter_utils.substitute_runtime_parameter(
        ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: pipeline_run_id}
    )
    snapshot = pipeline_pb2.SnapshotSettings()
    partial_run_utils.set_base_pipeline_run_strategy(snapshot, pipeline_run_id)
    partial_run_utils.mark_pipeline(
        ir, from_nodes=[node_id], to_nodes=[node_id], snapshot_settings=snapshot
    )
    for node in ir.nodes:
        options = node.pipeline_node.execution_options
        if options.HasField("run"):
            # See the module docstring: the base run is this run; nothing to copy.
            options.run.perform_snapshot = False
            options.run.depends_on_snapshot = False
    return ir


def run_node(config: RunConfig, node_id: str, pipeline_run_id: str) -> None:
    """Run one node of ``config``'s pipeline as part of pipeline run
    ``pipeline_run_id``, alone on its ML Metadata store (MetadataBusyError
    otherwise, at once: a task fails rather than waits on a local run).

    ExampleGen's task first prepares the data as ``mnist-tfx run`` does (a changed
    source becomes the next span; spans added with ``mnist-tfx ingest`` are read as
    they are), so the node reads the span a local run would.
    """
    if not pipeline_run_id.strip():
        raise UsageError("--pipeline-run-id: empty; expected the Airflow run's id")
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from components.data_validator.executor import DataValidationError
    from pipeline.local_runner import prepare_data

    connection = config.metadata_connection
    with exclusive_store(connection):
        # Compiled as the local runner does: a served copy deleted since the last
        # push makes the Pusher's task run it again (pipeline/served_copy.py).
        from pipeline.local_runner import build_pipeline
        from pipeline.served_copy import compile_for_run

        ir = compile_for_run(build_pipeline(config, config.tfrecord_dir), connection)
        ir = _marked_for(ir, node_id, pipeline_run_id)
        if node_id == "ExampleGen":
            prepare_data(config)
        logging.info(
            "running node %s of pipeline %s, run %s (metadata %s)",
            node_id,
            config.name,
            pipeline_run_id,
            describe_metadata(connection),
        )
        try:
            LocalDagRunner().run_with_ir(ir)
        except DataValidationError as error:
            raise DataValidationError(f"{config.tfrecord_dir}: {error}") from None
