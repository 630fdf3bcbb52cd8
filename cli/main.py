"""``mnist-tfx``'s entry point: the top-level parser, logging, and the command's run."""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Sequence

from cli.commands import COMMANDS, load
from cli.errors import run_command


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with one sub-parser per registered command."""
    parser = argparse.ArgumentParser(
        prog="mnist-tfx",
        description="TFX pipeline: raw MNIST / Fashion-MNIST files to a pushed TF Serving model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO from TFX and Beam")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, info in COMMANDS.items():
        module = load(name)
        module.add_arguments(sub.add_parser(name, help=info.help, description=module.__doc__))
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        warnings.filterwarnings("ignore")
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mnist-tfx ARGV``; the exit code (see ``cli``'s docstring)."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    return run_command(load(args.command).run, args)
