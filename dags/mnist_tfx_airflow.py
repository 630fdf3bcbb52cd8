"""The pipeline on Airflow 3: one task per node of the compiled TFX pipeline, wired
with the pipeline's own edges (docs/orchestrators.md, Airflow).

Airflow 3 runs in its own environment (``.venv-airflow``, ``make airflow-setup``),
which has no TFX: TFX 1.16 caps Airflow below 3. So this file imports nothing of the
project. It asks the project's environment for the plan (``mnist-tfx airflow-plan``:
the nodes and edges of the same ``create_pipeline`` the local runner runs), cached as
JSON under ``$AIRFLOW_HOME/mnist_tfx/`` and made again when missing, when the run flags
change or when ``pipeline/*.py`` is newer. Each task starts ``mnist-tfx run-node --node
ID --pipeline-run-id <the DAG run's run_id>`` in the project's environment: TFX's
partial run of that node alone within this pipeline run, on the same ML Metadata store
(``pipeline/airflow_plan.py`` explains how the tasks make one run).

Settings, from the environment of the scheduler / DAG processor (defaults after =):

- ``MNIST_TFX_PROJECT_VENV`` = ``<project>/.venv``: the environment the tasks run in
- ``MNIST_TFX_DATASET`` = ``mnist``
- ``MNIST_TFX_DATA_DIR`` = ``<project>/data``; TFRecords under ``DATA_DIR/tfrecords/<dataset>``
- ``MNIST_TFX_OUTPUT_ROOT`` = ``<project>/tfx_output`` (artifacts, ML Metadata, serving)
- ``MNIST_TFX_RUN_ARGS`` = empty: more ``mnist-tfx run`` flags (``--epochs 3 --source DIR
  --metadata mysql://...``), checked by the project's own parser; relative paths are
  relative to the project directory, where every command runs
- ``MNIST_TFX_SCHEDULE`` = ``@daily``; a cron expression or preset, or ``none``
- ``MNIST_TFX_RETRIES`` = ``1``, ``MNIST_TFX_RETRY_DELAY`` = ``300`` (seconds): a failed
  task is retried alone, after the delay

A second DAG, ``mnist_tfx_monitor``, exists when ``MNIST_TFX_MONITOR_LOG_PREFIX`` is set
(the ``filename_prefix`` of the server's request-logging config): one task running
``mnist-tfx monitor`` over the window ending at the run's data interval end (or its
trigger time), skipped when the window holds no logged request (exit 7) and failed
with the verdict when the traffic is skewed or drifted beyond the bounds (exit 6):

- ``MNIST_TFX_MONITOR_SCHEDULE`` = ``@hourly``; ``MNIST_TFX_MONITOR_WINDOW`` = ``3600``
  (seconds); ``MNIST_TFX_MONITOR_ARGS`` = empty: more ``mnist-tfx monitor`` flags
  (``--max-skew 0.05``); the dataset and output root are the pipeline's
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_SCHEDULE = "@daily"
# Fixed and in the past: with catchup off, the first run is the latest interval only.
START_DATE = datetime(2024, 1, 1, tzinfo=timezone.utc)
PLAN_FORMAT = 1
# Variables of Airflow's interpreter that must not reach the project's Python 3.10.
_NOT_INHERITED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")

log = logging.getLogger(__name__)


def project_python(env: dict[str, str]) -> Path:
    venv = env.get("MNIST_TFX_PROJECT_VENV") or str(PROJECT / ".venv")
    return Path(venv) / "bin" / "python"


def run_args(env: dict[str, str]) -> list[str]:
    """The ``mnist-tfx run`` flags of every command this DAG starts; flags in
    ``MNIST_TFX_RUN_ARGS`` come last and so win over the variables before them."""
    return [
        "--dataset",
        env.get("MNIST_TFX_DATASET", "mnist"),
        "--data-dir",
        env.get("MNIST_TFX_DATA_DIR", str(PROJECT / "data")),
        "--output-root",
        env.get("MNIST_TFX_OUTPUT_ROOT", str(PROJECT / "tfx_output")),
        *shlex.split(env.get("MNIST_TFX_RUN_ARGS", "")),
    ]


def _missing_python(python: Path) -> str:
    return (
        f"project venv python not found: {python} (set MNIST_TFX_PROJECT_VENV to the "
        "project's .venv; `make setup` creates it)"
    )


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    return env


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGTERM when the task's process
    ends, so a task Airflow kills (timeout, marked failed, SIGKILL) takes its node with
    it instead of leaving it running and holding the store's lock (Linux prctl
    PR_SET_PDEATHSIG; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _last_error(output: str) -> str | None:
    """The ``error: ...`` line ``mnist-tfx`` prints for any failure (cli/errors.py)."""
    errors = [
        line[len("error:") :].strip() for line in output.splitlines() if line.startswith("error:")
    ]
    return errors[-1] if errors else None


def _plan_path(env: dict[str, str], args: list[str]) -> Path:
    """Keyed on the project and the run flags, which decide the pipeline; not on the
    venv, so that a wrong venv path fails the tasks, each with its message."""
    home = Path(env.get("AIRFLOW_HOME") or Path.home() / "airflow")
    key = hashlib.sha256(json.dumps([str(PROJECT), args]).encode()).hexdigest()
    return home / "mnist_tfx" / f"plan-{key[:16]}.json"


def _plan_is_current(path: Path) -> bool:
    if not path.exists():
        return False
    newest_code = max(p.stat().st_mtime for p in (PROJECT / "pipeline").glob("*.py"))
    return path.stat().st_mtime >= newest_code


def load_plan(env: dict[str, str]) -> dict:
    """The pipeline's plan for these settings: the cached JSON, or made again by
    ``mnist-tfx airflow-plan`` in the project's environment (TFX loads there, 10-20 s)."""
    python, args = project_python(env), run_args(env)
    path = _plan_path(env, args)
    if not _plan_is_current(path):
        if not python.exists():
            raise RuntimeError(_missing_python(python))
        command = [str(python), "-m", "cli", "airflow-plan", *args, "--output", str(path)]
        proc = subprocess.run(
            command, cwd=PROJECT, env=_child_env(), capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"mnist-tfx airflow-plan failed (exit {proc.returncode}) for the MNIST_TFX_* "
                f"settings {shlex.join(args)}: "
                f"{_last_error(proc.stderr + proc.stdout) or proc.stderr[-2000:]}"
            )
    plan = json.loads(path.read_text(encoding="utf-8"))
    if plan.get("format") != PLAN_FORMAT:
        raise RuntimeError(f"{path}: plan format {plan.get('format')}, expected {PLAN_FORMAT}")
    return plan


def _run_project_command(command: list[str]) -> tuple[int, str]:
    """``command`` in the project's environment and directory, its output in the task's
    log; (exit code, output)."""
    log.info("running %s", shlex.join(command))
    output = []
    with subprocess.Popen(
        command,
        cwd=PROJECT,
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_die_with_parent,
    ) as proc:
        for line in proc.stdout:
            log.info("%s", line.rstrip())
            output.append(line)
    return proc.returncode, "".join(output)


def run_node(node_id: str, pipeline_run_id: str, python: str, args: list[str]) -> None:
    """The task: ``mnist-tfx run-node`` in the project's environment, its output in the
    task's log, and on failure the command's own one-line error as the task's."""
    if not Path(python).exists():
        raise AirflowException(_missing_python(Path(python)))
    command = [python, "-m", "cli", "run-node", "--node", node_id]
    returncode, output = _run_project_command(
        command + ["--pipeline-run-id", pipeline_run_id, *args]
    )
    if returncode != 0:
        error = _last_error(output) or "no error line; see the log above"
        raise AirflowException(f"{node_id} failed (mnist-tfx run-node exit {returncode}): {error}")


# `mnist-tfx monitor`'s exit codes (cli/errors.py).
MONITOR_EXIT_SKEW, MONITOR_EXIT_NO_REQUESTS = 6, 7


def run_monitor(python: str, args: list[str], until: str, window: str) -> None:
    """The monitor task: ``mnist-tfx monitor`` over ``window`` seconds ending at
    ``until``; skipped without requests, failed with the verdict beyond the bounds."""
    if not Path(python).exists():
        raise AirflowException(_missing_python(Path(python)))
    command = [python, "-m", "cli", "monitor", *args, "--until", until, "--window-seconds", window]
    returncode, output = _run_project_command(command)
    lines = [line for line in output.splitlines() if line.strip()]
    if returncode == MONITOR_EXIT_NO_REQUESTS:
        raise AirflowSkipException(lines[-1] if lines else "no logged requests")
    if returncode == MONITOR_EXIT_SKEW:
        verdict = next((line for line in lines if line.startswith("verdict:")), "see the log")
        raise AirflowFailException(f"served traffic beyond the bounds: {verdict}")
    if returncode != 0:
        error = _last_error(output) or "no error line; see the log above"
        raise AirflowException(f"mnist-tfx monitor failed (exit {returncode}): {error}")


def _non_negative(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name, str(default)).strip()
    if not value.isdigit():
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


def schedule(env: dict[str, str]) -> str | None:
    value = env.get("MNIST_TFX_SCHEDULE", DEFAULT_SCHEDULE).strip()
    return None if value.lower() in ("", "none") else value


def create_dag(env: dict[str, str]) -> DAG:
    plan = load_plan(env)
    python, args = str(project_python(env)), run_args(env)
    dag = DAG(
        dag_id=plan["pipeline_name"],
        schedule=schedule(env),
        start_date=START_DATE,
        catchup=False,
        # One run at a time: every run uses the same ML Metadata store and serving path.
        max_active_runs=1,
        # And one task at a time: each holds the store's one-run lock while its node
        # runs, so two branches started together (StatisticsGen beside a resolver) would
        # fail each other with exit 4 under a parallel executor.
        max_active_tasks=1,
        default_args={
            "owner": "mnist-tfx",
            "retries": _non_negative(env, "MNIST_TFX_RETRIES", 1),
            "retry_delay": timedelta(seconds=_non_negative(env, "MNIST_TFX_RETRY_DELAY", 300)),
        },
        description=(
            f"TFX pipeline {plan['pipeline_name']}: {plan['dataset']} TFRecords to a pushed "
            f"TF Serving model at {plan['serving_model_dir']} (ML Metadata {plan['metadata']})"
        ),
        tags=["tfx", plan["dataset"]],
    )
    tasks = {}
    for node in plan["nodes"]:
        tasks[node["id"]] = PythonOperator(
            task_id=node["id"],
            python_callable=run_node,
            op_kwargs={
                "node_id": node["id"],
                "pipeline_run_id": "{{ run_id }}",
                "python": python,
                "args": args,
            },
            doc_md=f"TFX node `{node['id']}` ({node['type']}), run by `mnist-tfx run-node`.",
            dag=dag,
        )
    for node in plan["nodes"]:
        for upstream in node["upstream"]:
            tasks[upstream] >> tasks[node["id"]]
    return dag


MONITOR_DAG_ID = "mnist_tfx_monitor"


def create_monitor_dag(env: dict[str, str]) -> DAG | None:
    """The hourly monitor of the served model's logged requests, or None when
    ``MNIST_TFX_MONITOR_LOG_PREFIX`` is not set (nothing to read)."""
    prefix = env.get("MNIST_TFX_MONITOR_LOG_PREFIX", "").strip()
    if not prefix:
        return None
    window = env.get("MNIST_TFX_MONITOR_WINDOW", "3600").strip()
    try:
        if float(window) <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"MNIST_TFX_MONITOR_WINDOW: expected seconds > 0, got {window!r}"
        ) from None
    dataset = env.get("MNIST_TFX_DATASET", "mnist")
    output_root = env.get("MNIST_TFX_OUTPUT_ROOT", str(PROJECT / "tfx_output"))
    args = ["--log-prefix", prefix, "--dataset", dataset, "--output-root", output_root]
    args += shlex.split(env.get("MNIST_TFX_MONITOR_ARGS", ""))
    scheduled = env.get("MNIST_TFX_MONITOR_SCHEDULE", "@hourly").strip()
    dag = DAG(
        dag_id=MONITOR_DAG_ID,
        schedule=None if scheduled.lower() in ("", "none") else scheduled,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "mnist-tfx", "retries": 0},
        description=f"skew and drift of the requests logged under {prefix} ({dataset})",
        tags=["monitor", dataset],
    )
    PythonOperator(
        task_id="monitor",
        python_callable=run_monitor,
        op_kwargs={
            "python": str(project_python(env)),
            "args": args,
            # The data interval's end for a scheduled run; a manual run has none.
            "until": "{{ (data_interval_end or dag_run.run_after).timestamp() }}",
            "window": window,
        },
        doc_md="`mnist-tfx monitor` over the window ending at the run's interval end.",
        dag=dag,
    )
    return dag


DAG_ = create_dag(dict(os.environ))
MONITOR_DAG = create_monitor_dag(dict(os.environ))
