"""Run one node of the pipeline as part of a given pipeline run: what each task of the
Airflow 3 DAG does, in the project's environment. The upstream nodes must have run in
the same pipeline run (same --pipeline-run-id, same ML Metadata store); their outputs
are this node's inputs, and TFX's cache applies as in `mnist-tfx run`."""

from __future__ import annotations

import argparse

from cli.errors import EXIT_OK
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node", required=True, help="the node id, e.g. ExampleGen, Trainer, served_model_resolver"
    )
    parser.add_argument(
        "--pipeline-run-id",
        required=True,
        help="the pipeline run this node belongs to (on Airflow: the DAG run's run_id)",
    )
    run_flags.add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipeline.airflow_plan import run_node

    config = run_flags.run_config_from_args(args)
    _ = config.metadata_connection  # a bad --metadata value exits 2 before anything runs
    run_node(config, args.node, args.pipeline_run_id)
    return EXIT_OK
