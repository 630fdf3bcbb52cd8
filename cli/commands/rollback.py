"""Publish a copy of an earlier version under the serving base path as a new, higher
version, so TF Serving (version policy 'latest') serves it at its next poll. History is
never rewritten: versions only grow, and the copy is staged, verified and renamed like
any push. The rollback is recorded in BASE/.rollbacks.jsonl, which `mnist-tfx versions`
reads. A later pipeline run that pushes a new model supersedes it. With --keep-versions
it then prunes as a push does, sparing versions that --models-config labels. It holds
the base path's publish lock throughout (serving/publish.py), waiting for a push in
progress; exit 4 if that lock stays taken for 10 minutes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cli.commands.versions import serving_base, serving_config
from cli.errors import EXIT_BUSY, EXIT_OK
from ingest.errors import usage_error
from pipeline import run_flags
from serving import object_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    run_flags.add_model(parser)
    parser.add_argument(
        "--to", type=int, help="version to restore (default: the one before the newest)"
    )
    parser.add_argument(
        "--serving-root",
        type=object_store.base_path,
        help="default: OUTPUT_ROOT/serving; an s3:// or gs:// URL for an object store",
        default=None,
    )
    parser.add_argument("--output-root", type=Path, default=Path("tfx_output"))
    parser.add_argument("--model-name", help="default: the dataset name")
    parser.add_argument(
        "--keep-versions",
        type=int,
        help="after the rollback, keep only the newest N versions (default: delete none)",
    )
    run_flags.add_models_config(parser)


def check(args: argparse.Namespace) -> None:
    """UsageError when the base path to roll back in does not exist (on an object
    store, where prefixes need not exist, rollback() says when it holds no version)."""
    if object_store.is_url(args.serving_root):
        return
    config = serving_config(args)
    base = config.serving_model_dir
    if not base.is_dir():
        flag, value = (
            ("--serving-root", args.serving_root)
            if args.serving_root is not None
            else ("--output-root", args.output_root)
        )
        raise usage_error(
            flag, value, f"expected pushed versions of model {base.name}; no directory {base}"
        )


def run(args: argparse.Namespace) -> int:
    from serving.publish import (
        PublishLockTimeoutError,
        prune_versions,
        publish_lock,
        rollback,
    )
    from serving.verify import VERIFICATION_PATH, verify_saved_model

    base = serving_base(args, serving_config(args))

    def verify(path: str) -> None:
        # Versions pushed by this pipeline carry the Trainer's predictions.
        import tensorflow as tf

        if tf.io.gfile.exists(os.path.join(path, VERIFICATION_PATH)):
            verify_saved_model(path)

    # One publish lock over the rollback and the pruning after it (reentrant), so no
    # push slips in between; another holder is waited for, then exit 4.
    try:
        with publish_lock(base):
            version, restored = rollback(base, to=args.to, verify=verify)
            print(
                f"version {version} now serves the model of version {restored} "
                f"({os.path.join(base, str(version))})"
            )
            if args.keep_versions is not None:
                deleted = prune_versions(base, args.keep_versions, models_config=args.models_config)
                if deleted:
                    print(f"deleted old versions {', '.join(map(str, deleted))}")
    except PublishLockTimeoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BUSY
    return EXIT_OK
