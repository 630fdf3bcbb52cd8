"""List the integer versions under the serving base path, newest first, with what
ML Metadata knows of each: accuracy, blessing, dataset, model, hyperparameters, the
MLMD ids from the push back to the examples, and the source files' sha256 per
training span as recorded when the version was pushed (else as ExampleGen recorded
them; never the span's manifest as it is now), and which of the two it shows.
With --card V, print version V's model card (the Markdown the Pusher wrote into
V/assets.extra/model_card.md) instead."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone

from cli.errors import EXIT_OK, EXIT_STALE, require_metadata_store
from ingest.errors import UsageError
from pipeline import run_flags
from pipeline.config import RunConfig
from serving import object_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    run_flags.add_model(parser)
    run_flags.add_run_paths(parser)
    parser.add_argument(
        "--serving-root",
        type=object_store.base_path,
        help="default: OUTPUT_ROOT/serving; an s3:// or gs:// URL for an object store",
    )
    parser.add_argument("--model-name", help="default: the dataset name")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--card",
        type=int,
        metavar="VERSION",
        help="print the model card of this version (VERSION/assets.extra/model_card.md; "
        "model_card.html beside it) instead of the table",
    )
    parser.add_argument(
        "--max-age-days",
        type=float,
        metavar="DAYS",
        help="exit 5 when the served model (after a rollback, the restored one) was pushed "
        "more than DAYS days ago, or when nothing is served: a staleness check for cron",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.lineage import format_versions, list_version_lineage, versions_json

    config = serving_config(args)
    if args.card is not None:
        # The card travels inside the version: no metadata store needed to read it.
        print(read_card(serving_base(args, config), args.card), end="")
        return EXIT_OK
    require_metadata_store(config)
    base = serving_base(args, config)
    rows = list_version_lineage(str(config.metadata), base)
    print(versions_json(rows) if args.json else format_versions(rows))
    if args.max_age_days is not None:
        return _check_age(base, args.max_age_days)
    return EXIT_OK


def serving_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of ``args``: its ``serving_model_dir`` is a URL for a URL root."""
    return run_flags.partial_run_config(
        args, serving_root=args.serving_root, model_name=args.model_name
    )


def serving_base(args: argparse.Namespace, config: RunConfig) -> str:
    """The model's serving base path: ``SERVING_ROOT/<model name>``, a local path or a URL."""
    return str(config.serving_model_dir)


def read_card(base: str, version: int) -> str:
    """The Markdown model card of ``version`` under the serving base path ``base``;
    UsageError (exit 2) naming the version and what was expected when the version or
    its card is not there."""
    from components.pusher.model_card import CARD_FILES
    from serving.publish import list_versions

    versions = list_versions(base)
    if version not in versions:
        there = ", ".join(map(str, reversed(versions))) or "none"
        raise UsageError(
            f"--card {version}: no version {version} under {base}; versions there: {there}"
        )
    path = (
        object_store.join(base, str(version), CARD_FILES[0])
        if object_store.is_url(base)
        else os.path.join(base, str(version), CARD_FILES[0])
    )
    exists = object_store.exists(path) if object_store.is_url(base) else os.path.isfile(path)
    if not exists:
        raise UsageError(
            f"--card {version}: version {version} has no model card; expected {path} "
            "(written by the Pusher since model cards were added; an older push has none)"
        )
    if object_store.is_url(base):
        card = object_store.read_bytes(path).decode("utf-8")
    else:
        with open(path, encoding="utf-8") as f:
            card = f.read()
    return _rollback_note(base, version) + card


def _rollback_note(base: str, version: int) -> str:
    """For a version ``mnist-tfx rollback`` published, a line saying which version it
    copies: its card is the restored version's, written when that one was pushed, and
    names that version and date (empty for any other version)."""
    from serving.publish import ROLLBACK_LOG, rollback_sources

    sources = rollback_sources(base)
    if version not in sources:
        return ""
    chain = [sources[version]]
    while chain[-1] in sources and len(chain) <= len(sources):  # a copy of a copy
        chain.append(sources[chain[-1]])
    copies = ", ".join(f"a copy of version {v}" for v in chain[1:])
    return (
        f"> Version {version} is a rollback copy of version {chain[0]}"
        + (f" ({copies})" if copies else "")
        + f", recorded in {ROLLBACK_LOG}: the model and the card below are version "
        f"{chain[-1]}'s, written when it was pushed.\n\n"
    )


def _check_age(serving_model_dir: str, max_days: float) -> int:
    """ML Test Score, Monitor 4: the served model must not be older than ``max_days``."""
    from pipeline.lineage import served_model_age

    age = served_model_age(serving_model_dir)
    if age is None:
        print(f"error: {serving_model_dir}: nothing is served", file=sys.stderr)
        return EXIT_STALE
    days = age.days(datetime.now(timezone.utc))
    restored = f" (restoring version {age.origin})" if age.origin != age.served else ""
    when = age.pushed_at.isoformat(timespec="seconds")
    if days > max_days:
        print(
            f"error: the served version {age.served}{restored} holds a model pushed {when}, "
            f"{days:.1f} days ago: older than --max-age-days {max_days:g}; run the pipeline "
            "on current data",
            file=sys.stderr,
        )
        return EXIT_STALE
    print(f"served version {age.served}{restored}: model pushed {when}, {days:.1f} days ago")
    return EXIT_OK
