"""The registry of ``mnist-tfx`` commands, in ``mnist-tfx --help`` order.

Each command is a module here with ``add_arguments(parser)`` and ``run(args) -> int``
(an exit code), and optionally ``check(args)``, raising ``UsageError`` on a flag
value only that command can judge; its docstring is the command's ``--help``
description. ``CommandInfo.writes`` names the directory flags (by ``dest``) the
command creates or writes under, which must then be writable before it starts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class CommandInfo:
    module: str
    help: str
    writes: tuple[str, ...] = ()


COMMANDS: dict[str, CommandInfo] = {
    "fetch": CommandInfo(
        "cli.commands.fetch", "get and verify the four IDX files of a dataset", ("data_dir",)
    ),
    "convert": CommandInfo(
        "cli.commands.convert", "fetch if needed, then write TFRecords", ("data_dir",)
    ),
    "ingest": CommandInfo(
        "cli.commands.ingest",
        "add a batch of IDX files as the next span of TFRecords",
        ("data_dir",),
    ),
    "run": CommandInfo(
        "cli.commands.run",
        "fetch, convert, run the pipeline, print the summary",
        ("output_root", "data_dir", "serving_root"),
    ),
    "summary": CommandInfo(
        "cli.commands.summary", "print what the latest run did, from ML Metadata"
    ),
    "versions": CommandInfo(
        "cli.commands.versions",
        "list pushed versions with accuracy, model, push time and MLMD lineage",
    ),
    "reproduce": CommandInfo(
        "cli.commands.reproduce",
        "train every tutorial model on both datasets and compare with the tutorials",
        ("output_root", "data_dir"),
    ),
    "rollback": CommandInfo(
        "cli.commands.rollback",
        "make an earlier pushed version current again (as a new, higher version)",
        ("serving_root",),
    ),
    "airflow-plan": CommandInfo(
        "cli.commands.airflow_plan",
        "the pipeline's nodes and edges as JSON, for the Airflow 3 DAG",
        ("output_root",),
    ),
    "run-node": CommandInfo(
        "cli.commands.run_node",
        "run one node of the pipeline within a given pipeline run (an Airflow task)",
        ("output_root", "data_dir", "serving_root"),
    ),
    "serve": CommandInfo(
        "cli.commands.serve", "serve pushed models over TF Serving's REST and gRPC APIs"
    ),
    "predict": CommandInfo(
        "cli.commands.predict", "classify one image with a served model (REST or gRPC)"
    ),
    "monitor": CommandInfo(
        "cli.commands.monitor",
        "compare the served model's logged requests with its training data and the last window",
    ),
}


def load(name: str) -> ModuleType:
    """The module of command ``name``."""
    return importlib.import_module(COMMANDS[name].module)
