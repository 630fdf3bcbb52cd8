"""The ``mnist-tfx`` command line: help on every subcommand, flag validation and
exit codes that need no pipeline run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli.errors import EXIT_BAD_INPUT
from cli.main import build_parser, main

SUBCOMMANDS = ("fetch", "convert", "run", "summary", "versions")


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: mnist-tfx {command}" in out
    assert "--dataset" in out


@pytest.mark.parametrize(("command", "option"), [("serve", "--rest-port"), ("predict", "--image")])
def test_serving_subcommands_have_help(command, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: mnist-tfx {command}" in out and option in out


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in (*SUBCOMMANDS, "serve", "predict"):
        assert command in out


def test_console_script_is_installed():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlib.metadata import entry_points;"
            "print([e.value for e in entry_points(group='console_scripts')"
            " if e.name == 'mnist-tfx'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "cli.main:console_main" in proc.stdout


def test_console_main_returns_the_exit_code_and_freezes_the_heap():
    """The console script returns main's exit code with the heap frozen, so the
    interpreter's last collection at exit skips it (in a child: freezing is for good)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gc, cli.main as m; m.main = lambda: 3; code = m.console_main();"
            "print(code, gc.get_freeze_count() > 1000)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == "3 True\n"


def test_unknown_dataset_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "--dataset", "cifar10"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: --dataset cifar10: expected one of mnist, fashion_mnist "
        "(see mnist-tfx run --help)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "optimizer=adagrad"], "hparams.optimizer"),
        (["--param", "nonsense=1"], "unknown hyperparameter 'nonsense'"),
        (["--param", "epochs=three"], "epochs expects int"),
        (["--batch-size", "0"], "--batch-size 0: expected an integer >= 1"),
        (["--param", "batch_size=0"], "hparams.batch_size"),
        (["--keep-versions", "0"], "--keep-versions 0: expected an integer >= 1"),
    ],
)
def test_bad_hyperparameters_fail_before_anything_runs(tmp_path, capsys, args, message):
    code = main(
        ["run", "--output-root", str(tmp_path / "out"), "--data-dir", str(tmp_path / "d"), *args]
    )
    assert code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "d").exists()


def test_run_takes_the_local_runner_and_names_the_others(capsys):
    assert build_parser().parse_args(["run", "--dataset", "mnist"]).runner == "local"
    assert build_parser().parse_args(["run", "--dataset", "mnist", "--runner", "local"]).runner
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--dataset", "mnist", "--runner", "airflow"])
    assert "error: --runner airflow: expected one of local" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    run_help = capsys.readouterr().out
    assert "dags/mnist_tfx_airflow.py" in run_help and "pipeline.kubeflow_runner" in run_help


def test_summary_without_a_run_says_so(tmp_path, capsys):
    code = main(["summary", "--output-root", str(tmp_path)])
    assert code == EXIT_BAD_INPUT
    assert "no metadata store" in capsys.readouterr().err
