"""Helpers of the Airflow 3 tests (``tests/pipeline/test_airflow3_*.py``): the Airflow
environment ``make airflow-setup`` builds, a private AIRFLOW_HOME on SQLite, running the
``airflow`` command and reading task states back from Airflow's own database.

Airflow runs in subprocesses only, from ``.venv-airflow`` (Python 3.11, no TFX): this
test process has neither Airflow nor anyone's Airflow settings.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
AIRFLOW_VENV = PROJECT / ".venv-airflow"
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"
AIRFLOW_PYTHON = AIRFLOW_VENV / "bin" / "python"
PROJECT_VENV = PROJECT / ".venv"


def require_airflow() -> None:
    assert AIRFLOW.exists(), (
        f"Airflow 3 environment missing: {AIRFLOW} not found (run `make airflow-setup`; "
        "`make test` does)"
    )


def airflow_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``airflow`` command on a private home under ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MNIST_TFX_"))}
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    home = root / "airflow"
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        # The first parse runs `mnist-tfx airflow-plan`, which loads TFX: 10-60 s on a
        # busy 2-core machine, against Airflow's 30 s default.
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="600",
        TF_CPP_MIN_LOG_LEVEL="2",
        MNIST_TFX_PROJECT_VENV=str(PROJECT_VENV),
    )
    env.update(extra)
    return env


def airflow(
    args: list[str], env: dict[str, str], log: Path, timeout: float = 3600
) -> tuple[int, float]:
    """``airflow ARGS`` with its output in ``log``; (exit code, seconds)."""
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [str(AIRFLOW), *args],
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    return proc.returncode, round(time.monotonic() - started, 1)


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:]


def _connect(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True, timeout=30)


def latest_run_id(home: Path, dag_id: str) -> str:
    with _connect(home) as db:
        row = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
    assert row, f"no run of {dag_id} in {home / 'airflow.db'}"
    return row[0]


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 1)


def task_states(home: Path, dag_id: str, run_id: str) -> dict[str, dict]:
    """task_id -> state, try_number and seconds of the last try, from Airflow's database."""
    with _connect(home) as db:
        rows = db.execute(
            "SELECT task_id, state, try_number, start_date, end_date FROM task_instance "
            "WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        ).fetchall()
    return {
        task: {"state": state, "try": tries, "seconds": _seconds(start, end)}
        for task, state, tries, start, end in rows
    }


def state_of(home: Path, dag_id: str, task_id: str) -> str | None:
    """The state of ``task_id`` in the newest run of ``dag_id`` (None before it exists);
    read while ``airflow dags test`` writes, so a busy database counts as not yet."""
    try:
        with _connect(home) as db:
            row = db.execute(
                "SELECT ti.state FROM task_instance ti JOIN dag_run dr "
                "ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id "
                "WHERE ti.dag_id = ? AND ti.task_id = ? ORDER BY dr.id DESC LIMIT 1",
                (dag_id, task_id),
            ).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def format_states(states: dict[str, dict], order: list[str]) -> str:
    return "\n".join(
        f"  {task:<22} {states[task]['state']:<16} try {states[task]['try']}  "
        f"{states[task]['seconds']} s"
        for task in order
        if task in states
    )
