"""Read the latest run of a pipeline back from ML Metadata."""

from __future__ import annotations

import argparse

from cli.errors import EXIT_OK, require_metadata_store
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    run_flags.add_model(parser)
    run_flags.add_run_paths(parser)


def run(args: argparse.Namespace) -> int:
    from ingest.datasets import get_dataset
    from pipeline.run_summary import format_summary, summarize_run

    config = run_flags.partial_run_config(args)
    require_metadata_store(config)
    summary = summarize_run(
        str(config.metadata), config.name, get_dataset(config.dataset).class_names
    )
    print(format_summary(summary, config.dataset))
    return EXIT_OK
