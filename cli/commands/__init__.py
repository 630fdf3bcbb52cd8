"""The registry of ``mnist-tfx`` commands, in ``mnist-tfx --help`` order.

Each command is a module here with ``add_arguments(parser)`` and ``run(args) -> int``
(an exit code); its docstring is the command's ``--help`` description.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class CommandInfo:
    module: str
    help: str


COMMANDS: dict[str, CommandInfo] = {
    "fetch": CommandInfo("cli.commands.fetch", "get and verify the four IDX files of a dataset"),
    "convert": CommandInfo("cli.commands.convert", "fetch if needed, then write TFRecords"),
    "ingest": CommandInfo(
        "cli.commands.ingest", "add a batch of IDX files as the next span of TFRecords"
    ),
    "run": CommandInfo("cli.commands.run", "fetch, convert, run the pipeline, print the summary"),
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
    ),
    "rollback": CommandInfo(
        "cli.commands.rollback",
        "make an earlier pushed version current again (as a new, higher version)",
    ),
    "serve": CommandInfo(
        "cli.commands.serve", "serve pushed models over TF Serving's REST and gRPC APIs"
    ),
    "predict": CommandInfo(
        "cli.commands.predict", "classify one image with a served model (REST or gRPC)"
    ),
}


def load(name: str) -> ModuleType:
    """The module of command ``name``."""
    return importlib.import_module(COMMANDS[name].module)
