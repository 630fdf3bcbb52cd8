"""List the integer versions under the serving base path, newest first, with what
ML Metadata knows of each: accuracy, blessing, dataset, model, hyperparameters, the
MLMD ids from the push back to the examples, and the source files' sha256."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.errors import EXIT_OK, require_metadata_store
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    run_flags.add_model(parser)
    run_flags.add_run_paths(parser)
    parser.add_argument("--serving-root", type=Path, help="default: OUTPUT_ROOT/serving")
    parser.add_argument("--model-name", help="default: the dataset name")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from pipeline.lineage import format_versions, list_version_lineage, versions_json

    config = run_flags.partial_run_config(
        args, serving_root=args.serving_root, model_name=args.model_name
    )
    require_metadata_store(config)
    rows = list_version_lineage(str(config.metadata), str(config.serving_model_dir))
    print(versions_json(rows) if args.json else format_versions(rows))
    return EXIT_OK
