"""Get the dataset's IDX files into DATA_DIR/raw/<dataset> and check each against its
known size and sha256."""

from __future__ import annotations

import argparse

from cli.errors import EXIT_OK
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    run_flags.add_source(parser)


def run(args: argparse.Namespace) -> int:
    from ingest.fetch import fetch_dataset

    config = run_flags.partial_run_config(args)
    path = fetch_dataset(args.dataset, config.raw_dir, args.source)
    print(f"{args.dataset}: verified IDX files in {path}")
    return EXIT_OK
