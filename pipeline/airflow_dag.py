"""Airflow runner: the pipeline of ``pipeline/pipeline.py`` as an Airflow DAG, built by
TFX's ``AirflowDagRunner`` (one PythonOperator per component, the pipeline's edges as
task dependencies). Only paths, the schedule and the runner are chosen here; the
pipeline is ``pipeline.local_runner.build_pipeline``'s, with the same ``RunConfig``.

Settings come from the environment when Airflow parses this file (defaults after =):

- ``MNIST_TFX_DATASET`` = ``mnist``
- ``MNIST_TFX_DATA_DIR`` = ``<project>/data``; TFRecords are read from
  ``DATA_DIR/tfrecords/<dataset>``
- ``MNIST_TFX_OUTPUT_ROOT`` = ``<project>/tfx_output`` (artifacts, ML Metadata, serving)
- ``MNIST_TFX_SCHEDULE`` = ``@daily``; a cron expression or preset, or ``none`` (manual only)
- ``MNIST_TFX_RETRIES`` = ``1``: retries of a failed task, 5 minutes apart
- ``MNIST_TFX_RUN_ARGS`` = empty: more ``mnist-tfx run`` flags, parsed by its own parser,
  e.g. ``--epochs 3 --min-accuracy 0.9 --metadata mysql://...``

Parsing fetches and converts nothing: the TFRecords must be in place beforehand
(``mnist-tfx convert``); a missing data root fails the ExampleGen task, not the parse.
Airflow imports this module through ``dags/`` (see ``dags/mnist_tfx_dags.py`` for why).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata
from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig
from tfx.orchestration.launcher.in_process_component_launcher import InProcessComponentLauncher

from pipeline import run_flags
from pipeline.config import RunConfig
from pipeline.local_runner import build_pipeline

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCHEDULE = "@daily"
# Fixed and in the past: with catchup off, the first run is the latest interval only.
START_DATE = datetime(2024, 1, 1, tzinfo=timezone.utc)
DEFAULT_RETRIES = 1
RETRY_DELAY = timedelta(minutes=5)
# `mnist-tfx run` flags that mean nothing to a scheduled run: the data is prepared
# beforehand, and no process is left at the end to write a summary.
_NOT_FOR_AIRFLOW = ("--source", "--summary-json")


def run_args_from_env(env: Mapping[str, str]) -> list[str]:
    """The ``mnist-tfx run`` command line the environment describes; flags in
    ``MNIST_TFX_RUN_ARGS`` come last and so win over the variables before them."""
    extra = shlex.split(env.get("MNIST_TFX_RUN_ARGS", ""))
    for flag in _NOT_FOR_AIRFLOW:
        if any(arg == flag or arg.startswith(flag + "=") for arg in extra):
            raise ValueError(f"MNIST_TFX_RUN_ARGS: {flag} has no effect on the Airflow DAG")
    return [
        "run",
        "--dataset",
        env.get("MNIST_TFX_DATASET", "mnist"),
        "--data-dir",
        env.get("MNIST_TFX_DATA_DIR", str(PROJECT_ROOT / "data")),
        "--output-root",
        env.get("MNIST_TFX_OUTPUT_ROOT", str(PROJECT_ROOT / "tfx_output")),
        *extra,
    ]


def _parse_run_args(argv: list[str]) -> argparse.Namespace:
    # argparse reports bad flags on stderr and exits; Airflow shows an import error's
    # message, so the message goes into the exception instead.
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            # argv[0] is the subcommand, run.
            return run_flags.build_run_parser().parse_args(argv[1:])
    except SystemExit as error:
        message = stderr.getvalue().strip().splitlines()
        raise ValueError(
            f"bad MNIST_TFX_* settings ({shlex.join(argv)}): {message[-1] if message else error}"
        ) from None


def run_config_from_env(env: Mapping[str, str]) -> RunConfig:
    """The same ``RunConfig`` that ``mnist-tfx run`` with these flags would use."""
    args = _parse_run_args(run_args_from_env(env))
    # Task processes need not share the scheduler's working directory.
    args.output_root, args.data_dir = args.output_root.resolve(), args.data_dir.resolve()
    return run_flags.run_config_from_args(args)


def schedule_from_env(env: Mapping[str, str]) -> str | None:
    value = env.get("MNIST_TFX_SCHEDULE", DEFAULT_SCHEDULE).strip()
    return None if value.lower() in ("", "none") else value


def retries_from_env(env: Mapping[str, str]) -> int:
    value = env.get("MNIST_TFX_RETRIES", str(DEFAULT_RETRIES))
    if not value.strip().isdigit():
        raise ValueError(f"MNIST_TFX_RETRIES: expected an integer >= 0, got {value!r}")
    return int(value)


def airflow_dag_config(dataset: str, schedule: str | None, retries: int) -> dict[str, Any]:
    """Arguments of Airflow's ``DAG`` (the dag_id is the pipeline's name)."""
    return {
        # `schedule`, not `schedule_interval`, which Airflow 2.4+ deprecates.
        "schedule": schedule,
        "start_date": START_DATE,
        "catchup": False,
        # One run at a time: every run uses the same SQLite ML Metadata file.
        "max_active_runs": 1,
        "default_args": {"owner": "mnist-tfx", "retries": retries, "retry_delay": RETRY_DELAY},
        "description": f"TFX pipeline: {dataset} TFRecords to a pushed TF Serving model",
        "tags": ["tfx", dataset],
    }


class _OneEventPerInputArtifact(metadata.Metadata):
    """TFX's legacy ML Metadata handle, which AirflowDagRunner's launchers use (the
    LocalDagRunner does not), with one fix: it writes one INPUT event per input key,
    and MLMD allows one event per (artifact, execution, type). Once a model has been
    blessed, a run on unchanged data hands the Evaluator that same model as candidate
    and as baseline, and registering the execution fails (AlreadyExistsError, then an
    AssertionError in ``register_execution``). Such an artifact gets one event holding
    both paths here, which is how the LocalDagRunner records it."""

    def _artifact_and_event_pairs(self, *args: Any, **kwargs: Any) -> list[tuple]:
        pairs = []
        events_by_artifact: dict[tuple[int, int], metadata_store_pb2.Event] = {}
        for pair in super()._artifact_and_event_pairs(*args, **kwargs):
            artifact, event = pair[0], pair[1] if len(pair) > 1 else None
            key = (artifact.id, event.type) if event is not None and artifact.id else None
            if key in events_by_artifact:
                events_by_artifact[key].path.steps.extend(event.path.steps)
                continue
            if key is not None:
                events_by_artifact[key] = event
            pairs.append(pair)
        return pairs


def _launcher_class(
    connection_config: metadata_store_pb2.ConnectionConfig,
) -> type[InProcessComponentLauncher]:
    """TFX's in-process launcher on ``_OneEventPerInputArtifact``. Airflow's component
    hands every launcher a plain ``Metadata`` for the pipeline's connection; this
    launcher opens the same store through the fixed handle instead."""

    class Launcher(InProcessComponentLauncher):
        def __init__(self, *, metadata_connection: metadata.Metadata, **kwargs: Any) -> None:
            del metadata_connection  # the same connection_config, opened below
            super().__init__(
                metadata_connection=_OneEventPerInputArtifact(connection_config), **kwargs
            )

    return Launcher


def create_dag(env: Mapping[str, str]):
    """The Airflow DAG for the settings in ``env``."""
    config = run_config_from_env(env)
    pipeline = build_pipeline(config, config.tfrecord_dir)
    runner_config = AirflowPipelineConfig(
        airflow_dag_config=airflow_dag_config(
            config.dataset, schedule_from_env(env), retries_from_env(env)
        ),
        supported_launcher_classes=[_launcher_class(pipeline.metadata_connection_config)],
    )
    return AirflowDagRunner(runner_config).run(pipeline)


DAG = create_dag(os.environ)
