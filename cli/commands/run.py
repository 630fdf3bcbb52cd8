"""Run the whole TFX pipeline locally (LocalDagRunner, SQLite ML Metadata, Beam
DirectRunner) and print what it did."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cli.errors import EXIT_NOT_BLESSED, EXIT_OK
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_run_arguments(parser)
    parser.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = run_flags.run_config_from_args(args)
    _ = config.metadata_connection  # a bad --metadata value exits 2 before any data is converted
    from ingest.datasets import get_dataset
    from pipeline.local_runner import run_local
    from pipeline.run_summary import format_summary, summarize_run

    run_local(config)
    summary = summarize_run(
        str(config.metadata), config.name, get_dataset(config.dataset).class_names
    )
    summary.wall_seconds = round(time.perf_counter() - started, 1)
    print(format_summary(summary, config.dataset))
    if args.summary_json:
        args.summary_json.write_text(summary.to_json() + "\n", encoding="utf-8")
    if summary.blessed is False:
        reasons = "; ".join(summary.gate_failures)
        print(
            f"error: the Evaluator did not bless the model ({reasons}); nothing was pushed",
            file=sys.stderr,
        )
        return EXIT_NOT_BLESSED
    return EXIT_OK
