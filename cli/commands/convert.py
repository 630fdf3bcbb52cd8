"""Convert the IDX files into sharded TFRecords of tf.Example under
DATA_DIR/tfrecords/<dataset>/span-0/{train,eval}."""

from __future__ import annotations

import argparse

from cli.errors import EXIT_OK
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    run_flags.add_source(parser)


def run(args: argparse.Namespace) -> int:
    from pipeline.local_runner import prepare_data

    root = prepare_data(run_flags.partial_run_config(args))
    print(f"{args.dataset}: TFRecords in {root}")
    return EXIT_OK
