"""Print (or write) the pipeline's plan for the Airflow 3 DAG as JSON: the DAG id, the
nodes of the compiled pipeline with their upstream nodes, and where the run's ML
Metadata and models go. Each task then passes the same run flags to ``mnist-tfx
run-node``. The DAG file runs this in the project's environment,
since Airflow's own environment has no TFX (docs/orchestrators.md, Airflow)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from cli.errors import EXIT_OK
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_run_arguments(parser)
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="write the JSON here instead of stdout"
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.airflow_plan import plan_json

    config = run_flags.run_config_from_args(args)
    _ = config.metadata_connection  # a bad --metadata value exits 2 here, not in a task
    text = plan_json(config)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    # Atomic: Airflow's DAG processor may read the file while it is being replaced.
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.output.parent, prefix=f".{args.output.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.output)
    return EXIT_OK
