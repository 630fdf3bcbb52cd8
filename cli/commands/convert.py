"""Convert the IDX files into sharded TFRecords of tf.Example as a span under
DATA_DIR/tfrecords/<dataset>/: span 0 the first time; later, the latest span again
when it holds the same files, else the next span. A span is never rewritten."""

from __future__ import annotations

import argparse

from cli.errors import EXIT_OK
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    run_flags.add_source(parser)


def run(args: argparse.Namespace) -> int:
    from pipeline.local_runner import WRITTEN_BY_CONVERT, prepare_span

    prepared = prepare_span(run_flags.partial_run_config(args), written_by=WRITTEN_BY_CONVERT)
    if prepared.written:
        print(
            f"{args.dataset}: wrote span {prepared.span} in {prepared.data_root} "
            f"({prepared.reason})"
        )
    else:
        print(
            f"{args.dataset}: nothing written; span {prepared.span} in {prepared.data_root} "
            f"is the data ({prepared.reason})"
        )
    return EXIT_OK
