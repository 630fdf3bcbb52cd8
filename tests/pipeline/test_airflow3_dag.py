"""The Airflow 3 DAG's shape and settings, without running the pipeline: the plan
``mnist-tfx airflow-plan`` makes from the compiled pipeline (``pipeline/airflow_plan.py``),
the DAG Airflow 3 builds from it in ``.venv-airflow`` (``dags/mnist_tfx_airflow.py``:
one task per node, the pipeline's edges, one active run, no catch-up, daily), how a
task's IR is marked for its partial run, and the clear errors of bad settings, a
wrong project venv, an unknown node and a missing Python 3.11.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.airflow_fixture import (
    AIRFLOW_PYTHON,
    PROJECT,
    airflow,
    airflow_env,
    latest_run_id,
    require_airflow,
    tail,
    task_states,
)
from tests.pipeline_fixture import fail_text, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAG_ID = "mnist_cnn"
# The compiled pipeline's nodes and their upstream nodes (pipeline/pipeline.py).
EDGES = {
    "ExampleGen": [],
    "StatisticsGen": ["ExampleGen"],
    "served_model_data_resolver": ["ExampleGen"],
    "SchemaGen": ["StatisticsGen"],
    "ExampleValidator": ["ExampleGen", "SchemaGen", "StatisticsGen", "served_model_data_resolver"],
    "Transform": ["ExampleGen", "ExampleValidator", "SchemaGen"],
    "Trainer": ["ExampleGen", "SchemaGen", "Transform"],
    "served_model_resolver": ["Trainer"],
    "Evaluator": ["ExampleGen", "SchemaGen", "Trainer", "served_model_resolver"],
    "Pusher": ["Evaluator", "Trainer"],
    "EvaluationReport": ["Evaluator", "ExampleGen", "Pusher", "Trainer"],
}

# Loads the DAG folder as Airflow 3's DAG processor does and prints what it found.
_INSPECT = textwrap.dedent(
    """
    import json
    from datetime import timedelta

    from airflow.models.dagbag import DagBag

    bag = DagBag(include_examples=False)
    out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "schedule": dag.timetable.summary,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "max_active_tasks": dag.max_active_tasks,
            "retries": dag.default_args.get("retries"),
            "retry_delay_s": dag.default_args.get("retry_delay", timedelta(0)).total_seconds(),
            "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
            "operators": sorted({type(t).__name__ for t in dag.tasks}),
            "op_kwargs": {t.task_id: t.op_kwargs for t in dag.tasks},
        }
    print(json.dumps(out))
    """
)


def _inspect(root: Path, **settings: str) -> dict:
    require_airflow()
    env = airflow_env(
        root,
        MNIST_TFX_DATA_DIR=str(root / "data"),
        MNIST_TFX_OUTPUT_ROOT=str(root / "out"),
        **settings,
    )
    proc = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", _INSPECT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    root = tmp_path_factory.mktemp("dag")
    return root, _inspect(root, MNIST_TFX_RUN_ARGS="--epochs 2")


def test_one_task_per_node_wired_with_the_pipelines_edges(parsed):
    _, found = parsed
    assert found["import_errors"] == {}
    dag = found["dags"][DAG_ID]
    assert dag["tasks"] == EDGES
    assert dag["operators"] == ["PythonOperator"]


def test_one_active_run_no_catch_up_daily_one_retry(parsed):
    dag = parsed[1]["dags"][DAG_ID]
    # @daily, as Airflow's timetable summarises it.
    assert (dag["schedule"], dag["catchup"], dag["max_active_runs"]) == ("0 0 * * *", False, 1)
    # One task at a time: parallel branches would fail each other on the store's lock.
    assert dag["max_active_tasks"] == 1
    assert (dag["retries"], dag["retry_delay_s"]) == (1, 300)


def test_each_task_runs_its_node_with_the_run_flags_in_the_project_venv(parsed):
    root, found = parsed
    kwargs = found["dags"][DAG_ID]["op_kwargs"]["Trainer"]
    assert kwargs["node_id"] == "Trainer" and kwargs["pipeline_run_id"] == "{{ run_id }}"
    assert kwargs["python"] == str(PROJECT / ".venv" / "bin" / "python")
    assert kwargs["args"] == [
        "--dataset",
        "mnist",
        "--data-dir",
        str(root / "data"),
        "--output-root",
        str(root / "out"),
        "--epochs",
        "2",
    ]
    # The plan was cached for the next parse, keyed on the project and the flags.
    plans = list((root / "airflow" / "mnist_tfx").glob("plan-*.json"))
    assert len(plans) == 1
    plan = json.loads(plans[0].read_text())
    assert [n["id"] for n in plan["nodes"]] == list(EDGES)
    assert plan["metadata"] == str(root / "out" / DAG_ID / "metadata.sqlite")


def test_bad_settings_fail_the_parse_naming_the_variable_and_value(parsed, tmp_path):
    found = _inspect(tmp_path, MNIST_TFX_RUN_ARGS="--epochs zero", MNIST_TFX_RETRIES="x")
    (error,) = found["import_errors"].values()
    assert "mnist-tfx airflow-plan failed (exit 2) for the MNIST_TFX_* settings" in error
    assert "--epochs zero: expected an integer" in error
    # The plan is made before the other variables are read; with good flags (whose plan
    # the first test cached), the retries.
    found = _inspect(parsed[0], MNIST_TFX_RUN_ARGS="--epochs 2", MNIST_TFX_RETRIES="x")
    (error,) = found["import_errors"].values()
    assert "MNIST_TFX_RETRIES: expected an integer >= 0, got 'x'" in error


def test_a_wrong_project_venv_without_a_cached_plan_fails_the_parse(tmp_path):
    venv = tmp_path / "nowhere"
    found = _inspect(tmp_path, MNIST_TFX_PROJECT_VENV=str(venv))
    (error,) = found["import_errors"].values()
    assert f"project venv python not found: {venv / 'bin' / 'python'}" in error
    assert "(set MNIST_TFX_PROJECT_VENV" in error
    assert found["dags"] == {}


def test_spans_add_the_latest_spans_resolver_as_a_task(tmp_path):
    from pipeline import run_flags
    from pipeline.airflow_plan import plan

    args = run_flags.build_run_parser().parse_args(
        ["--dataset", "mnist", "--output-root", str(tmp_path / "out"), "--spans", "2"]
    )
    nodes = {n["id"]: n["upstream"] for n in plan(run_flags.run_config_from_args(args))["nodes"]}
    assert nodes["latest_spans_resolver"] == ["ExampleGen"]
    assert "latest_spans_resolver" in nodes["Trainer"]


def test_a_task_ir_runs_its_node_alone_in_the_given_run_without_a_snapshot(tmp_path):
    from pipeline import run_flags
    from pipeline.airflow_plan import _compiled, _marked_for

    args = run_flags.build_run_parser().parse_args(
        ["--dataset", "mnist", "--output-root", str(tmp_path / "out")]
    )
    ir = _marked_for(_compiled(run_flags.run_config_from_args(args)), "Trainer", "run-7")
    assert ir.runtime_spec.pipeline_run_id.field_value.string_value == "run-7"
    options = {n.pipeline_node.node_info.id: n.pipeline_node.execution_options for n in ir.nodes}
    assert [node for node, o in options.items() if o.HasField("run")] == ["Trainer"]
    assert not options["Trainer"].run.perform_snapshot
    assert all(o.HasField("skip") for node, o in options.items() if node != "Trainer")
    # Every input channel of the Trainer reads this run's pipeline_run context.
    trainer = next(n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == "Trainer")
    for spec in trainer.inputs.inputs.values():
        for channel in spec.channels:
            runs = [q for q in channel.context_queries if q.type.name == "pipeline_run"]
            assert [q.name.field_value.string_value for q in runs] == ["run-7"]


def test_run_node_refuses_an_unknown_node_naming_the_known_ones(tmp_path):
    proc = run_cli(
        "run-node",
        "--node",
        "Trainr",
        "--pipeline-run-id",
        "r1",
        "--dataset",
        "mnist",
        "--output-root",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2, fail_text(proc)
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error: --node")]
    assert line.startswith(
        "error: --node 'Trainr': not a node of pipeline mnist_cnn; expected one of ExampleGen, "
    )
    assert sorted(line.split("expected one of ")[1].split(", ")) == sorted(EDGES)
    assert not (tmp_path / "out" / "serving").exists()


def test_airflow_setup_without_python_3_11_says_so(tmp_path):
    proc = subprocess.run(
        ["make", "-s", "airflow-setup", f"AIRFLOW_VENV={tmp_path / 'venv'}", "PYTHON311="],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "error: python3.11 not found (Airflow 3 runs in its own environment" in proc.stderr
    assert not (tmp_path / "venv").exists()


# A task's process as Airflow runs it: the DAG module imported (its plan cached by
# `parsed`), then run_node with a stand-in for the project's python that records its
# pid and sleeps.
_TASK = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("dag_file", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run_node("Trainer", "manual__r1", sys.argv[2], [])
    """
)


def test_a_killed_task_takes_its_node_process_with_it(parsed, tmp_path):
    import os
    import signal
    import time

    root, _ = parsed
    pid_file = tmp_path / "node.pid"
    node = tmp_path / "python"
    node.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    node.chmod(0o755)
    env = airflow_env(
        root,
        MNIST_TFX_DATA_DIR=str(root / "data"),
        MNIST_TFX_OUTPUT_ROOT=str(root / "out"),
        MNIST_TFX_RUN_ARGS="--epochs 2",
    )
    task = subprocess.Popen(
        [
            str(AIRFLOW_PYTHON),
            "-c",
            _TASK,
            str(PROJECT / "dags" / "mnist_tfx_airflow.py"),
            str(node),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert task.poll() is None and time.monotonic() < deadline, task.stderr.read()[-3000:]
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(child, 0)  # running
    # What Airflow does to a task it gives up on (the supervisor's last resort).
    task.send_signal(signal.SIGKILL)
    task.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return  # gone with its task
        try:  # reaped by init? a zombie still answers kill 0
            state = Path(f"/proc/{child}/stat").read_text().split()[2]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the node's process outlived its killed task")


MONITOR_DAG_ID = "mnist_tfx_monitor"


def test_the_monitor_dag_exists_with_a_log_prefix_only(parsed, tmp_path):
    """Without MNIST_TFX_MONITOR_LOG_PREFIX there is nothing to read and no monitor DAG;
    with it, one hourly task running `mnist-tfx monitor` on the pipeline's dataset and
    output root, one run at a time, no catch-up, no retry."""
    root, found = parsed
    assert MONITOR_DAG_ID not in found["dags"]
    found = _inspect(
        root,
        MNIST_TFX_RUN_ARGS="--epochs 2",
        MNIST_TFX_MONITOR_LOG_PREFIX=str(tmp_path / "logs" / "requests"),
        MNIST_TFX_MONITOR_ARGS="--max-skew 0.05",
    )
    assert found["import_errors"] == {}
    dag = found["dags"][MONITOR_DAG_ID]
    assert dag["tasks"] == {"monitor": []}
    assert (dag["schedule"], dag["catchup"], dag["max_active_runs"], dag["retries"]) == (
        "0 * * * *",
        False,
        1,
        0,
    )
    kwargs = dag["op_kwargs"]["monitor"]
    assert kwargs["args"] == [
        "--log-prefix", str(tmp_path / "logs" / "requests"),
        "--dataset", "mnist", "--output-root", str(root / "out"), "--max-skew", "0.05",
    ]  # fmt: skip
    assert kwargs["window"] == "3600"
    assert "data_interval_end" in kwargs["until"]


def test_the_monitor_task_skips_a_window_without_requests(tmp_path):
    """A real `airflow dags test` of the monitor DAG (the template rendered, the project
    venv's `mnist-tfx monitor` run): no log file yet -> exit 7 -> the task is skipped,
    with the command's message in its log; the DAG run succeeds."""
    require_airflow()
    env = airflow_env(
        tmp_path,
        MNIST_TFX_DATA_DIR=str(tmp_path / "data"),
        MNIST_TFX_OUTPUT_ROOT=str(tmp_path / "out"),
        MNIST_TFX_MONITOR_LOG_PREFIX=str(tmp_path / "logs" / "requests"),
    )
    code, _ = airflow(["db", "migrate"], env, tmp_path / "migrate.log", 900)
    assert code == 0, tail(tmp_path / "migrate.log")
    log = tmp_path / "monitor.log"
    code, seconds = airflow(["dags", "test", MONITOR_DAG_ID], env, log, 900)
    assert code == 0, tail(log)
    states = task_states(
        tmp_path / "airflow", MONITOR_DAG_ID, latest_run_id(tmp_path / "airflow", MONITOR_DAG_ID)
    )
    assert states["monitor"]["state"] == "skipped", tail(log)
    assert f"no file matches {tmp_path / 'logs' / 'requests'}.*.tfrecord" in log.read_text()
