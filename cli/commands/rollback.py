"""Publish a copy of an earlier version under the serving base path as a new, higher
version, so TF Serving (version policy 'latest') serves it at its next poll. History is
never rewritten: versions only grow, and the copy is staged, verified and renamed like
any push. The rollback is recorded in BASE/.rollbacks.jsonl, which `mnist-tfx versions`
reads. A later pipeline run that pushes a new model supersedes it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli.errors import EXIT_OK
from pipeline import run_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_flags.add_dataset(parser)
    run_flags.add_model(parser)
    parser.add_argument(
        "--to", type=int, help="version to restore (default: the one before the newest)"
    )
    parser.add_argument(
        "--serving-root", type=Path, help="default: OUTPUT_ROOT/serving", default=None
    )
    parser.add_argument("--output-root", type=Path, default=Path("tfx_output"))
    parser.add_argument("--model-name", help="default: the dataset name")


def run(args: argparse.Namespace) -> int:
    from serving.publish import rollback
    from serving.verify import VERIFICATION_PATH, verify_saved_model

    config = run_flags.partial_run_config(
        args, serving_root=args.serving_root, model_name=args.model_name
    )
    base = config.serving_model_dir

    def verify(path: str) -> None:
        # Versions pushed by this pipeline carry the Trainer's predictions.
        if os.path.exists(os.path.join(path, VERIFICATION_PATH)):
            verify_saved_model(path)

    version, restored = rollback(base, to=args.to, verify=verify)
    print(f"version {version} now serves the model of version {restored} ({base / str(version)})")
    return EXIT_OK
