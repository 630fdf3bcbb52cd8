"""The Airflow 3 DAG (``dags/mnist_tfx_airflow.py`` over ``pipeline/airflow_plan.py``)
end to end: real ``airflow dags test`` runs from ``.venv-airflow`` on the committed
fixture, one epoch, Airflow's SQLite database in a temporary AIRFLOW_HOME, every task
running its node in the project's ``.venv`` through ``mnist-tfx run-node``.

Run 1: a local run (this test process) holds the ML Metadata store while the Pusher's
task starts: that task fails with the store's one-line message, nothing is pushed, and
its retry re-runs the Pusher alone; then every task has succeeded and a version is
pushed. Run 2 on the same data: every component cached (the served model's own run
already checked these examples and this model, so the baseline resolvers hand back
the baselines of those checks, as under the local runner), nothing pushed. Run 3 after
a new span is ingested: trains and pushes. Run 4 with a wrong project venv: the first
task fails with its message, the rest never start. ``mnist-tfx summary`` and
``versions`` read these runs from ML Metadata like local ones.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.metadata_lock import exclusive_metadata
from tests.airflow_fixture import (
    airflow,
    airflow_env,
    format_states,
    latest_run_id,
    require_airflow,
    state_of,
    tail,
    task_states,
)
from tests.pipeline_fixture import FIXTURES, fail_text, listing, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATASET = "mnist"
DAG_ID = f"{DATASET}_cnn"  # the pipeline's name
NODES = [
    "ExampleGen",
    "StatisticsGen",
    "served_model_data_resolver",
    "SchemaGen",
    "ExampleValidator",
    "Transform",
    "Trainer",
    "served_model_resolver",
    "Evaluator",
    "Pusher",
    "EvaluationReport",
]
# One epoch on the fixture; loose gates: a trained model only has to beat chance (10 %),
# and run 3's model, trained on less data, need not beat the served one.
RUN_ARGS = (
    f"--source {FIXTURES / DATASET} --epochs 1 --batch-size 50 --min-accuracy 0.2 "
    "--min-class-accuracy 0 --max-accuracy-drop 1"
)
TIMEOUT_S = 3600
WORK = [n for n in NODES if not n.endswith("_resolver")]


def _versions(serving: Path) -> list[str]:
    return sorted(p for p in listing(serving) if p.isdigit())


class _StoreHeldDuringPusher(threading.Thread):
    """A local run holding the ML Metadata store from the moment the Evaluator's task
    has finished until the Pusher's task has failed on it (or the run gave up)."""

    def __init__(self, home: Path, metadata: Path, serving: Path) -> None:
        super().__init__(daemon=True)
        self.home, self.metadata, self.serving = home, metadata, serving
        self.stop = threading.Event()
        self.held = False
        self.pusher_state: str | None = None
        self.serving_at_failure: list[str] | None = None
        self.error: BaseException | None = None

    def _wait_for(self, task: str, states: tuple[str, ...]) -> str | None:
        while not self.stop.is_set():
            state = state_of(self.home, DAG_ID, task)
            if state in states:
                return state
            time.sleep(0.1)
        return None

    def run(self) -> None:
        try:
            if self._wait_for("Evaluator", ("success", "failed")) != "success":
                return
            # The Pusher's command needs 10-30 s to load TFX before it asks for the store.
            with exclusive_metadata(self.metadata):
                self.held = True
                self.pusher_state = self._wait_for("Pusher", ("up_for_retry", "failed"))
                self.serving_at_failure = listing(self.serving)
        except BaseException as error:  # reported by the test, not lost in the thread
            self.error = error


@pytest.fixture(scope="module")
def airflow_runs(tmp_path_factory):
    """The four runs, in order, on one Airflow home, data root and output root."""
    require_airflow()
    root = tmp_path_factory.mktemp("airflow3")
    env = airflow_env(
        root,
        MNIST_TFX_DATASET=DATASET,
        MNIST_TFX_DATA_DIR=str(root / "data"),
        MNIST_TFX_OUTPUT_ROOT=str(root / "out"),
        MNIST_TFX_RUN_ARGS=RUN_ARGS,
        MNIST_TFX_RETRIES="1",
        MNIST_TFX_RETRY_DELAY="2",
    )
    home = root / "airflow"
    code, _ = airflow(["db", "migrate"], env, root / "migrate.log")
    assert code == 0, tail(root / "migrate.log")
    metadata = root / "out" / DAG_ID / "metadata.sqlite"
    serving = root / "out" / "serving" / DATASET
    runs = {"root": root, "home": home, "metadata": metadata, "serving": serving}

    def dags_test(name: str, date: str, run_env: dict[str, str]) -> dict:
        log = root / f"{name}.log"
        code, seconds = airflow(["dags", "test", DAG_ID, date], run_env, log, TIMEOUT_S)
        run_id = latest_run_id(home, DAG_ID)
        states = task_states(home, DAG_ID, run_id)
        print(f"\n{name}: airflow dags test {date}: exit {code}, {seconds} s, run {run_id}")
        print(format_states(states, NODES))
        return {
            "code": code,
            "seconds": seconds,
            "run_id": run_id,
            "states": states,
            "log": log,
            "versions": _versions(serving),
        }

    holder = _StoreHeldDuringPusher(home, metadata, serving)
    holder.start()
    try:
        runs["first"] = dags_test("run1", "2024-06-01", env)
    finally:
        holder.stop.set()
        holder.join(timeout=30)
    runs["holder"] = holder
    runs["second"] = dags_test("run2", "2024-06-02", env)
    proc = run_cli(
        "ingest",
        "--dataset",
        DATASET,
        "--source",
        str(FIXTURES / DATASET),
        "--data-dir",
        str(root / "data"),
        "--slice",
        "0:200",
        cwd=root,
    )
    assert proc.returncode == 0, fail_text(proc)
    runs["third"] = dags_test("run3", "2024-06-03", env)
    # The cached plan stays current even if pipeline/*.py was edited meanwhile, so the
    # DAG parses and the tasks meet the wrong venv.
    for plan in (home / "mnist_tfx").glob("plan-*.json"):
        os.utime(plan)
    bad_venv = dict(env, MNIST_TFX_PROJECT_VENV=str(root / "no-such-venv"), MNIST_TFX_RETRIES="0")
    runs["bad_venv"] = dags_test("run4", "2024-06-04", bad_venv)
    return runs


def _succeeded(run) -> None:
    states = {task: s["state"] for task, s in run["states"].items()}
    assert states == dict.fromkeys(NODES, "success"), tail(run["log"])


def test_first_run_a_locked_store_fails_the_pusher_alone_and_its_retry_pushes(airflow_runs):
    from pipeline.lineage import list_version_lineage

    first, holder = airflow_runs["first"], airflow_runs["holder"]
    assert holder.error is None, repr(holder.error)
    assert holder.held, "the Pusher took the store before the test could hold it"
    # The first try failed on the held store, with the store's own one-line message...
    assert holder.pusher_state == "up_for_retry", tail(first["log"])
    log = first["log"].read_text(errors="replace")
    assert "Pusher failed (mnist-tfx run-node exit 4): " in log
    assert f"another pipeline run (pid {os.getpid()}) is using this ML Metadata store" in log
    # ...and nothing of a version was written, not even a staging directory.
    assert [p for p in holder.serving_at_failure or [] if not p.startswith(".")] == []
    assert not any(p.startswith(".incoming") for p in holder.serving_at_failure or [])
    # The retry re-ran the Pusher alone: every task ran once, the Pusher twice.
    _succeeded(first)
    tries = {task: s["try"] for task, s in first["states"].items()}
    assert tries == {**dict.fromkeys(NODES, 1), "Pusher": 2}
    assert first["code"] == 0, tail(first["log"])
    assert len(first["versions"]) == 1
    versions = list_version_lineage(str(airflow_runs["metadata"]), str(airflow_runs["serving"]))
    pushed = [v for v in versions if str(v.version) == first["versions"][0]]
    assert pushed and pushed[0].blessed and pushed[0].span == 0
    assert pushed[0].model == "cnn_model_fn" and pushed[0].accuracy > 0.2


def _run_components(runs, run_id: str):
    """(node, state) of every execution of pipeline run ``run_id``, from ML Metadata."""
    from pipeline.run_summary import _STATE_NAMES, node_name_of, open_store

    store = open_store(str(runs["metadata"]))
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    assert context is not None, f"no pipeline_run context {run_id!r} in ML Metadata"
    return sorted(
        (node_name_of(store, e.id, DAG_ID), _STATE_NAMES[e.last_known_state])
        for e in store.get_executions_by_context(context.id)
    )


def _pushed_model(runs, run_id: str) -> dict:
    """The custom properties of the PushedModel that run ``run_id``'s Pusher wrote."""
    from pipeline.run_summary import custom_property, node_name_of, open_store, output_artifacts

    store = open_store(str(runs["metadata"]))
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    (pusher,) = [
        e
        for e in store.get_executions_by_context(context.id)
        if node_name_of(store, e.id, DAG_ID) == "Pusher"
    ]
    (artifact,) = output_artifacts(store, pusher.id)["pushed_model"]
    return {k: custom_property(artifact, k) for k in artifact.custom_properties}


def test_first_run_is_one_pipeline_run_in_ml_metadata(airflow_runs):
    """One run under the Airflow run's id, one execution per node (the Pusher's failed
    try stopped before launching), as a local run records it."""
    components = _run_components(airflow_runs, airflow_runs["first"]["run_id"])
    assert components == sorted((node, "COMPLETE") for node in NODES)


def test_second_run_caches_every_component_and_pushes_nothing(airflow_runs):
    second = airflow_runs["second"]
    _succeeded(second)
    assert second["code"] == 0
    assert {s["try"] for s in second["states"].values()} == {1}
    components = dict(_run_components(airflow_runs, second["run_id"]))
    assert {n: components[n] for n in WORK} == dict.fromkeys(WORK, "CACHED")
    assert second["versions"] == airflow_runs["first"]["versions"]
    # The cached Pusher's output is run 1's push: the same version, nothing copied.
    pushed = _pushed_model(airflow_runs, second["run_id"])
    assert pushed["pushed_version"] == airflow_runs["first"]["versions"][0]
    assert pushed == _pushed_model(airflow_runs, airflow_runs["first"]["run_id"])


def test_third_run_after_a_new_span_trains_and_pushes(airflow_runs):
    from pipeline.lineage import list_version_lineage

    third = airflow_runs["third"]
    _succeeded(third)
    assert third["code"] == 0
    components = dict(_run_components(airflow_runs, third["run_id"]))
    for node in ("ExampleGen", "Trainer", "Evaluator", "Pusher"):
        assert components[node] == "COMPLETE", components
    assert len(third["versions"]) == 2
    newest = list_version_lineage(str(airflow_runs["metadata"]), str(airflow_runs["serving"]))[0]
    assert str(newest.version) == third["versions"][-1]
    assert newest.span == 1 and newest.training_spans == [1]


def test_summary_and_versions_commands_read_the_airflow_runs(airflow_runs):
    root = airflow_runs["root"]
    paths = ["--dataset", DATASET, "--output-root", str(root / "out")]
    proc = run_cli("summary", *paths, cwd=root)
    assert proc.returncode == 0, fail_text(proc)
    # The latest run is run 3's: run 4 launched no node, so ML Metadata has no run 4.
    third = airflow_runs["third"]
    assert f"pipeline {DAG_ID} (dataset {DATASET}), run {third['run_id']}" in proc.stdout
    assert f"pushed: version {third['versions'][-1]} at " in proc.stdout
    assert "data: span 1 (trained on span(s) 1)" in proc.stdout
    proc = run_cli("versions", *paths, cwd=root)
    assert proc.returncode == 0, fail_text(proc)
    for version in airflow_runs["third"]["versions"]:
        assert version in proc.stdout
    assert "recorded at push time" in proc.stdout


def test_a_wrong_project_venv_fails_the_tasks_with_its_path(airflow_runs):
    bad = airflow_runs["bad_venv"]
    states = {task: s["state"] for task, s in bad["states"].items()}
    assert states["ExampleGen"] == "failed"
    assert {states[n] for n in NODES[1:]} == {"upstream_failed"}, states
    missing = airflow_runs["root"] / "no-such-venv" / "bin" / "python"
    assert f"project venv python not found: {missing} (set MNIST_TFX_PROJECT_VENV" in (
        bad["log"].read_text(errors="replace")
    )
    assert bad["versions"] == airflow_runs["third"]["versions"]
