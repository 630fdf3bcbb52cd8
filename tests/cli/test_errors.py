"""Exit codes and error lines of ``mnist-tfx``: every mistake in a flag is one line
``error: --flag VALUE: what was expected``, exit 2, found before anything is created;
an unexpected failure is one line and exit 1, its traceback only with ``-v``;
Ctrl-C is 130. No pipeline runs: every check here happens before any work."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cli import errors
from cli.commands import load
from cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_BLESSED,
    EXIT_OK,
)
from cli.main import main
from ingest.errors import UsageError
from pipeline import run_flags
from tests.pipeline_fixture import FIXTURES, fail_text, run_cli

PROJECT = Path(__file__).resolve().parents[2]


def _main(argv: list[str]) -> int:
    """main()'s exit code, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory (the defaults ./tfx_output and ./data land here)
    holding a file named ``afile`` and an empty directory ``adir``."""
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _assert_one_line_error(err: str, *parts: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# (argv, the start of the error line after "error: ": flag and value, then what was expected)
MISTAKES = [
    # thresholds
    (["run", "--min-accuracy", "1.5"], "--min-accuracy 1.5: expected a number in [0, 1]"),
    (["run", "--min-class-accuracy", "-0.1"], "--min-class-accuracy -0.1: expected a number in"),
    (["run", "--max-accuracy-drop", "2"], "--max-accuracy-drop 2.0: expected a number in [0, 1]"),
    (["run", "--max-drift", "1.01"], "--max-drift 1.01: expected a number in [0, 1] (TFDV"),
    (["run", "--max-label-drift", "nan"], "--max-label-drift nan: expected a number in [0, 1]"),
    (["run", "--max-drift", "inf"], "--max-drift inf: expected a number in [0, 1]"),
    # counts and hyperparameters
    (["run", "--keep-versions", "0"], "--keep-versions 0: expected an integer >= 1"),
    (["run", "--spans", "0"], "--spans 0: expected an integer >= 1"),
    (["run", "--epochs", "0"], "--epochs 0: expected an integer >= 1"),
    (["run", "--batch-size", "-5"], "--batch-size -5: expected an integer >= 1"),
    (["run", "--learning-rate", "0"], "--learning-rate 0.0: expected a number > 0"),
    (["run", "--param", "epochs=three"], "--param 'epochs=three': epochs expects int"),
    (["run", "--param", "nonsense=1"], "--param 'nonsense=1': unknown hyperparameter"),
    (["run", "--beam-arg", "foo"], "--beam-arg 'foo': expected --name=value"),
    # argparse's own, in the same one-line form
    (["run", "--epochs", "many"], "--epochs many: expected an integer"),
    (["run", "--dataset", "cifar10"], "--dataset cifar10: expected one of mnist, fashion_mnist"),
    # names
    (["run", "--model-name", "../x"], "--model-name ../x: expected a name for one directory"),
    (["run", "--model-name", ""], "--model-name '': expected a name for one directory"),
    (["run", "--model-name", "a\\b"], "--model-name a\\b: expected a name"),
    (["run", "--pipeline-name", ".."], "--pipeline-name ..: expected a name for one directory"),
    (["run", "--pipeline-name", "a/b"], "--pipeline-name a/b: expected a name"),
    (["versions", "--model-name", "a/b"], "--model-name a/b: expected a name"),
    (["summary", "--pipeline-name", "."], "--pipeline-name .: expected a name"),
    (["rollback", "--model-name", "../x"], "--model-name ../x: expected a name"),
    (["serve", "--model-name", ".."], "--model-name ..: expected a name"),
    (["predict", "--pixels", "1", "--model-name", "a/b"], "--model-name a/b: expected a name"),
    # paths
    (["run", "--output-root", "afile"], "--output-root afile: expected a directory; found a file"),
    (["run", "--data-dir", "afile/sub"], "--data-dir afile/sub: expected a directory path; afile"),
    (["run", "--serving-root", "afile"], "--serving-root afile: expected a directory"),
    (["run", "--source", "missing"], "--source missing: expected auto, npm, debian, mirror or a"),
    (["run", "--source", "afile"], "--source afile: expected auto, npm, debian, mirror or a"),
    (
        ["run", "--summary-json", "nodir/s.json"],
        "--summary-json nodir/s.json: expected an existing",
    ),
    (["run", "--summary-json", "adir"], "--summary-json adir: expected a file name; found a dir"),
    (["fetch", "--source", "missing"], "--source missing: expected auto"),
    (["fetch", "--data-dir", "afile"], "--data-dir afile: expected a directory; found a file"),
    (["convert", "--source", "missing"], "--source missing: expected auto"),
    (["ingest", "--source", "missing"], "--source missing: expected auto"),
    (["ingest", "--slice", "5:2"], "--slice '5:2': expected START:END with 0 <= START < END"),
    (["ingest", "--span", "-1"], "--span -1: expected an integer >= 0"),
    (["summary", "--output-root", "afile"], "--output-root afile: expected a directory"),
    (["summary"], "--output-root tfx_output: no metadata store at"),
    (["versions", "--serving-root", "afile"], "--serving-root afile: expected a directory"),
    (["rollback"], "--output-root tfx_output: expected pushed versions of model mnist"),
    (["rollback", "--serving-root", "adir"], "--serving-root adir: expected pushed versions"),
    (["reproduce", "--models", "resnet"], "--models resnet: unknown model 'resnet'"),
    (["reproduce", "--datasets", "cifar"], "--datasets cifar: unknown dataset 'cifar'"),
    (["reproduce", "--source-dir", "mnist=missing"], "--source-dir mnist=missing: expected an"),
    (["reproduce", "--source-dir", "cifar=adir"], "--source-dir cifar=adir: expected DATASET=DIR"),
    (["reproduce", "--output-root", "afile"], "--output-root afile: expected a directory"),
    (["serve", "--output-root", "afile"], "--output-root afile: expected a directory"),
    (["serve", "--model-base-path", "afile"], "--model-base-path afile: expected a directory"),
    (["predict", "--image", "missing.png"], "--image missing.png: expected an existing file"),
    (["predict", "--idx", "adir"], "--idx adir: expected an existing file; found a directory"),
    (["predict", "--pixels", "1", "--timeout", "0"], "--timeout 0.0: expected a number > 0"),
    (["predict", "--pixels", "1", "--port", "70000"], "--port 70000: expected a port number"),
    (["predict", "--idx", "afile", "--index", "-1"], "--index -1: expected an integer >= 0"),
]


@pytest.mark.parametrize(
    ("argv", "expected"), MISTAKES, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_a_mistake_is_one_line_naming_flag_and_value_and_nothing_is_created(
    workdir, capsys, argv, expected
):
    before = _tree(workdir)
    assert _main(argv) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    line = _assert_one_line_error(captured.err)
    assert line.startswith(f"error: {expected}"), line
    assert captured.out == ""
    assert _tree(workdir) == before


@pytest.fixture
def read_only_dir(workdir, monkeypatch):
    """A directory nobody may write: mode 0o555, and, where the tests run as root
    (who may write anyway), ``os.access`` answering as it would for anyone else."""
    directory = workdir / "read_only"
    directory.mkdir()
    directory.chmod(0o555)
    if os.access(directory, os.W_OK):
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            inside = Path(path).resolve().is_relative_to(directory.resolve())
            if inside and mode & os.W_OK:
                return False
            return real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    yield directory
    directory.chmod(0o755)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["run", "--output-root", "read_only/out"],
            "--output-root read_only/out: expected a writable directory; read_only is not writable",
        ),
        (
            ["run", "--data-dir", "read_only"],
            "--data-dir read_only: expected a writable directory; it is not writable",
        ),
        (
            ["run", "--serving-root", "read_only/s"],
            "--serving-root read_only/s: expected a writable directory",
        ),
        (
            ["run", "--summary-json", "read_only/s.json"],
            "--summary-json read_only/s.json: expected a writable file",
        ),
        (["ingest", "--data-dir", "read_only/d"], "--data-dir read_only/d: expected a writable"),
        (
            ["rollback", "--output-root", "read_only"],
            "--output-root read_only: expected a writable directory",
        ),
    ],
)
def test_an_unwritable_directory_is_refused_before_any_work(
    read_only_dir, workdir, capsys, argv, expected
):
    before = _tree(workdir)
    assert _main(argv) == EXIT_BAD_INPUT
    line = _assert_one_line_error(capsys.readouterr().err)
    assert line.startswith(f"error: {expected}"), line
    assert _tree(workdir) == before


def test_read_only_commands_do_not_need_a_writable_output_root(read_only_dir, capsys):
    # summary only reads: the output root being read-only is no mistake; the
    # missing store is.
    assert _main(["summary", "--output-root", "read_only"]) == EXIT_BAD_INPUT
    _assert_one_line_error(capsys.readouterr().err, "--output-root read_only: no metadata store")


def test_an_existing_span_is_refused_before_conversion(workdir, capsys):
    span_0 = workdir / "data" / "tfrecords" / "mnist" / "span-0"
    span_0.mkdir(parents=True)
    before = _tree(workdir)
    argv = ["ingest", "--source", str(FIXTURES / "mnist"), "--span", "0"]
    assert _main(argv) == EXIT_BAD_INPUT
    _assert_one_line_error(
        capsys.readouterr().err,
        "error: --span 0: expected a new span number; span 0 exists already",
        "(next: --span 1)",
    )
    assert _tree(workdir) == before


def test_the_real_command_reports_a_mistake_in_one_line(tmp_path):
    """``python -m cli`` end to end: a threshold out of range and a --summary-json
    in a missing directory (found before the run, not after it)."""
    out = tmp_path / "out"
    common = ["run", "--source", str(FIXTURES / "mnist"), "--output-root", str(out)]
    proc = run_cli(*common, "--data-dir", str(tmp_path / "d"), "--max-drift", "1.5", cwd=tmp_path)
    assert proc.returncode == EXIT_BAD_INPUT, fail_text(proc)
    _assert_one_line_error(proc.stderr, "error: --max-drift 1.5: expected a number in [0, 1]")
    summary = tmp_path / "missing" / "summary.json"
    proc = run_cli(
        *common, "--data-dir", str(tmp_path / "d"), "--summary-json", str(summary), cwd=tmp_path
    )
    assert proc.returncode == EXIT_BAD_INPUT, fail_text(proc)
    _assert_one_line_error(
        proc.stderr, f"error: --summary-json {summary}: expected an existing directory for it"
    )
    assert not out.exists() and not (tmp_path / "d").exists()


def test_the_airflow_path_gets_the_same_value_checks():
    args = run_flags.build_run_parser().parse_args(["--max-label-drift", "3"])
    with pytest.raises(UsageError, match=r"^--max-label-drift 3.0: expected a number in \[0, 1\]"):
        run_flags.run_config_from_args(args)
    args = run_flags.build_run_parser().parse_args(["--model-name", "../x"])
    with pytest.raises(UsageError, match=r"^--model-name \.\./x: expected a name"):
        run_flags.run_config_from_args(args)


def test_the_bounds_are_inclusive(workdir):
    args = run_flags.build_run_parser().parse_args(
        [
            "--min-accuracy",
            "1",
            "--max-accuracy-drop",
            "0",
            "--max-drift",
            "1",
            "--max-label-drift",
            "0",
            "--min-class-accuracy",
            "0",
        ]
    )
    config = run_flags.run_config_from_args(args)
    assert (config.min_accuracy, config.max_drift, config.max_label_drift) == (1.0, 1.0, 0.0)


# -- unexpected failures ----------------------------------------------------------------


def _raise_from_run(monkeypatch, error: BaseException) -> None:
    def run(args):
        raise error

    monkeypatch.setattr(load("fetch"), "run", run)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("boom\nsecond line"),
        ValueError("an internal check failed"),  # no longer taken for bad input
        PermissionError(13, "Permission denied", "tfx_output/mnist_cnn/artifacts"),
    ],
    ids=["RuntimeError", "ValueError", "PermissionError"],
)
def test_an_unexpected_error_is_one_line_exit_1_without_traceback(
    workdir, monkeypatch, capsys, error
):
    _raise_from_run(monkeypatch, error)
    assert _main(["fetch"]) == EXIT_FAILURE
    line = _assert_one_line_error(capsys.readouterr().err)
    kind = type(error).__name__
    assert re.fullmatch(rf"error: {kind}: .+ \(run with -v for the traceback\)", line), line
    assert " ".join(str(error).split()) in line


@pytest.mark.parametrize("argv", [["-v", "fetch"], ["fetch", "-v"], ["fetch", "--verbose"]])
def test_verbose_prints_the_traceback(workdir, monkeypatch, capsys, argv):
    _raise_from_run(monkeypatch, RuntimeError("boom"))
    assert _main(argv) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):"), err
    assert "raise error" in err and "RuntimeError: boom" in err
    assert err.strip().splitlines()[-1] == "error: RuntimeError: boom"


def test_ctrl_c_exits_130(workdir, monkeypatch, capsys):
    _raise_from_run(monkeypatch, KeyboardInterrupt())
    assert _main(["fetch"]) == EXIT_INTERRUPTED == 130
    _assert_one_line_error(capsys.readouterr().err, "error: interrupted")


def test_a_usage_error_raised_deep_inside_is_exit_2(workdir, monkeypatch, capsys):
    from serving.publish import rollback

    (workdir / "serving" / "mnist").mkdir(parents=True)
    with pytest.raises(UsageError, match="no versions to roll back"):
        rollback(workdir / "serving" / "mnist")
    _raise_from_run(monkeypatch, UsageError("--to 7: expected a pushed version"))
    assert _main(["fetch"]) == EXIT_BAD_INPUT
    _assert_one_line_error(capsys.readouterr().err, "error: --to 7: expected a pushed version")


def test_known_errors_keep_their_codes():
    from ingest.fetch import DataIntegrityError
    from ingest.idx import IdxFormatError
    from pipeline.metadata_lock import MetadataBusyError

    assert errors.exit_code_for(UsageError("x")) == EXIT_BAD_INPUT
    assert errors.exit_code_for(IdxFormatError("x")) == EXIT_BAD_INPUT
    assert errors.exit_code_for(DataIntegrityError("x")) == EXIT_BAD_INPUT
    assert errors.exit_code_for(MetadataBusyError("x")) == EXIT_BUSY
    assert errors.exit_code_for(ValueError("x")) == EXIT_FAILURE
    assert errors.exit_code_for(FileExistsError("x")) == EXIT_FAILURE
    assert errors.exit_code_for(KeyboardInterrupt()) == EXIT_INTERRUPTED


# -- documentation ----------------------------------------------------------------------


def test_the_exit_codes_are_documented():
    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert {EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_NOT_BLESSED, EXIT_BUSY} <= codes
    assert EXIT_INTERRUPTED in codes
    text = (PROJECT / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert table == codes
    import cli

    documented = {int(m) for m in re.findall(r"^- (\d+) ", cli.__doc__, flags=re.MULTILINE)}
    assert documented == codes


def test_a_sqlite_metadata_path_that_cannot_be_a_store_is_refused(workdir, capsys):
    argv = ["run", "--dataset", "mnist", "--source", str(FIXTURES / "mnist")]
    assert _main([*argv, "--metadata", "adir"]) == EXIT_BAD_INPUT
    _assert_one_line_error(capsys.readouterr().err, "--metadata adir", "found a directory")
    assert _main([*argv, "--metadata", "afile/metadata.sqlite"]) == EXIT_BAD_INPUT
    _assert_one_line_error(
        capsys.readouterr().err, "--metadata afile/metadata.sqlite", "afile is a file"
    )
    assert not (workdir / "tfx_output").exists()
    assert not (workdir / "data").exists()
