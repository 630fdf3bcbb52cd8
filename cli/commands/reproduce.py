"""Run the pipeline once per (model, dataset), each as its own pipeline
reproduce_<dataset>_<model> under OUTPUT_ROOT with the gate off, then print and write
OUTPUT_ROOT/reproduction.md and .json: model, dataset, the tutorial's number, ours,
steps/epochs, training and wall seconds."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.errors import EXIT_OK
from ingest.errors import usage_error
from pipeline import run_flags
from pipeline.reproduce import DATASETS, MODELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated (default: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--datasets", default=",".join(DATASETS), help="comma-separated (default: both)"
    )
    parser.add_argument(
        "--output-root",
        type=Path,
        default=Path("tfx_output") / "reproduce",
        help="default: ./tfx_output/reproduce",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="default: ./data")
    parser.add_argument(
        "--source-dir",
        action="append",
        default=[],
        metavar="DATASET=DIR",
        help="read DATASET's four IDX files from DIR instead of fetching (repeatable)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a hyperparameter of every model, e.g. --param max_steps=20 (repeatable)",
    )
    run_flags.add_beam(parser)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _source_dirs(texts: list[str]) -> dict[str, str]:
    sources = {}
    for text in texts:
        dataset, _, directory = text.partition("=")
        if dataset not in DATASETS or not directory:
            raise usage_error(
                "--source-dir", text, f"expected DATASET=DIR, DATASET in {', '.join(DATASETS)}"
            )
        if not Path(directory).is_dir():
            raise usage_error(
                "--source-dir", text, "expected an existing directory holding the four IDX files"
            )
        sources[dataset] = directory
    return sources


def check(args: argparse.Namespace) -> None:
    """UsageError on an unknown model or dataset, or a bad ``--source-dir``, before
    the first of the runs (hours of work) starts."""
    from trainer.hparams import MODEL_DEFAULTS

    for model in _names(args.models):
        if model not in MODEL_DEFAULTS:
            known = ", ".join(sorted(MODEL_DEFAULTS))
            raise usage_error("--models", args.models, f"unknown model {model!r}; known: {known}")
    for dataset in _names(args.datasets):
        if dataset not in DATASETS:
            known = ", ".join(DATASETS)
            raise usage_error(
                "--datasets", args.datasets, f"unknown dataset {dataset!r}; known: {known}"
            )
    _source_dirs(args.source_dir)


def run(args: argparse.Namespace) -> int:
    from pipeline.beam_runners import beam_pipeline_args
    from pipeline.reproduce import format_markdown, run_one, write_table
    from trainer.hparams import parse_override

    check(args)
    models, datasets = _names(args.models), _names(args.datasets)
    sources = _source_dirs(args.source_dir)
    overrides = dict(parse_override(text) for text in args.param)
    rows = []
    for model in models:
        for dataset in datasets:
            print(f"reproduce: {model} on {dataset} ...", flush=True)
            row = run_one(
                model,
                dataset,
                args.output_root,
                args.data_dir,
                source=sources.get(dataset, "auto"),
                overrides=overrides,
                beam_args=beam_pipeline_args(args.beam, args.beam_arg),
            )
            accuracy = f"{row.accuracy:.4f}" if row.accuracy is not None else "n/a"
            print(f"  accuracy {accuracy}, {row.wall_seconds:.0f} s", flush=True)
            rows.append(row)
    markdown, as_json = write_table(rows, args.output_root)
    print()
    print(format_markdown(rows))
    print(f"written: {markdown} and {as_json}")
    return EXIT_OK
