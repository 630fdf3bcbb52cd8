"""The command registry and the modules behind it: every command parses ``--help``,
the top-level parser lists them in registry order, the run flags are one set for the
CLI and the Airflow DAG, ``pipeline/`` never imports ``cli/``, and the parser
builders stay small."""

from __future__ import annotations

import argparse
import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from cli.commands import COMMANDS, load
from cli.main import build_parser, main
from pipeline import run_flags
from serving.server import add_serve_arguments

PROJECT = Path(__file__).resolve().parents[2]


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_and_its_module_interface(name, capsys):
    module = load(name)
    assert callable(module.add_arguments) and callable(module.run)
    assert COMMANDS[name].help and module.__doc__
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mnist-tfx {name}")
    # The module's docstring is the description, reflowed by argparse.
    assert " ".join(module.__doc__.split()[:6]) in " ".join(out.split())


def test_build_parser_lists_the_commands_in_registry_order(capsys):
    sub = _subparsers(build_parser())
    assert list(sub.choices) == list(COMMANDS)
    assert [a.dest for a in sub._choices_actions] == list(COMMANDS)
    assert [a.help for a in sub._choices_actions] == [c.help for c in COMMANDS.values()]
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "{" + ",".join(COMMANDS) + "}" in capsys.readouterr().out


def test_run_command_and_airflow_parser_share_the_run_flags():
    run_parser = _subparsers(build_parser()).choices["run"]
    shared = _options(run_flags.build_run_parser())
    assert _options(run_parser) == [*shared, "--summary-json", "-v", "--verbose"]
    argv = ["--dataset", "fashion_mnist", "--epochs", "2", "--spans", "2", "--max-drift", "0.3"]
    from_cli = vars(build_parser().parse_args(["run", *argv]))
    from_flags = vars(run_flags.build_run_parser().parse_args(argv))
    assert {k: from_cli[k] for k in from_flags} == from_flags
    config = run_flags.run_config_from_args(run_flags.build_run_parser().parse_args(argv))
    assert (config.dataset, config.num_spans, config.max_drift) == ("fashion_mnist", 2, 0.3)
    assert config.hparams["epochs"] == 2


def test_run_flags_errors_name_the_run_command(capsys):
    with pytest.raises(SystemExit):
        run_flags.build_run_parser().parse_args(["--epochs", "many"])
    assert "mnist-tfx run: error: argument --epochs: invalid int value" in capsys.readouterr().err


def test_pipeline_never_imports_cli():
    offenders = []
    for path in sorted((PROJECT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "cli"]
    assert offenders == []


@pytest.mark.parametrize("function", [build_parser, add_serve_arguments])
def test_parser_builders_stay_small(function):
    lines, _ = inspect.getsourcelines(function)
    assert len(lines) <= 60, f"{function.__qualname__}: {len(lines)} lines"


def test_python_dash_m_cli_runs_the_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "fetch", "--help"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mnist-tfx fetch")
