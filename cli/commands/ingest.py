"""Convert a batch of IDX files (or a slice of the full set, for demos) into
DATA_DIR/tfrecords/<dataset>/span-N/{train,validation,test}. A run reads the latest span; spans
are never overwritten."""

from __future__ import annotations

import argparse

from cli.errors import EXIT_OK
from ingest.errors import usage_error
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    run_flags.add_source(parser)
    parser.add_argument(
        "--span", type=int, help="the span number (default: one after the latest, 0 if none)"
    )
    parser.add_argument(
        "--slice",
        help="keep training examples START..END-1 only, e.g. 0:20000 (validation is held out of "
        "them; the test split stays the whole test set, so every span's model is measured on "
        "the same examples)",
    )


def check(args: argparse.Namespace) -> None:
    """UsageError on a ``--span`` that exists already: spans are never overwritten."""
    from ingest.spans import list_spans, span_dir

    if args.span is None:
        return
    data_root = run_flags.partial_run_config(args).tfrecord_dir
    if span_dir(data_root, args.span).exists():
        spans = list_spans(data_root)
        next_span = spans[-1] + 1 if spans else args.span + 1
        raise usage_error(
            "--span",
            args.span,
            f"expected a new span number; span {args.span} exists already in {data_root} "
            f"and spans are never overwritten (next: --span {next_span})",
        )


def run(args: argparse.Namespace) -> int:
    from ingest.spans import parse_slice
    from pipeline.local_runner import ingest

    train_slice = parse_slice(args.slice) if args.slice else None
    span, result = ingest(run_flags.partial_run_config(args), args.span, train_slice)
    counts = ", ".join(f"{split} {count}" for split, count in result.counts.items())
    print(f"span {span}: {counts} examples in {result.output_dir}")
    return EXIT_OK
