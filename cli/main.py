"""``mnist-tfx``'s entry point: the top-level parser, logging, the checks of every
flag, and the command's run."""

from __future__ import annotations

import argparse
import gc
import logging
import re
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from cli.commands import COMMANDS, load
from cli.errors import EXIT_BAD_INPUT, run_command

_TYPE_NAMES = {"int": "an integer", "float": "a number"}


def _usage_line(message: str) -> str:
    """argparse's error text as ``--flag VALUE: expected ...`` where it names a flag
    and a value (a wrong type or choice), else the text with ``argument`` dropped."""
    wrong_type = re.fullmatch(r"argument (\S+): invalid (\w+) value: '(.*)'", message)
    if wrong_type:
        flag, kind, value = wrong_type.groups()
        return f"{flag.split('/')[-1]} {value}: expected {_TYPE_NAMES.get(kind, kind)}"
    wrong_choice = re.fullmatch(
        r"argument (\S+): invalid choice: '(.*)' \(choose from (.*)\)", message
    )
    if wrong_choice:
        flag, value, choices = wrong_choice.groups()
        return f"{flag.split('/')[-1]} {value}: expected one of {choices.replace(chr(39), '')}"
    return re.sub(r"^argument (\S+): ", lambda m: f"{m.group(1).split('/')[-1]}: ", message)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``error: ...`` (exit 2), like every
    other mistake the command reports; the usage stays one ``--help`` away."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {_usage_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _add_verbose(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="log INFO from TFX and Beam; print the traceback of an unexpected error",
    )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with one sub-parser per registered command."""
    parser = _Parser(
        prog="mnist-tfx",
        description="TFX pipeline: raw MNIST / Fashion-MNIST files to a pushed TF Serving model.",
    )
    _add_verbose(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, info in COMMANDS.items():
        module = load(name)
        command = sub.add_parser(name, help=info.help, description=module.__doc__)
        module.add_arguments(command)
        # `mnist-tfx run ... -v` works too; SUPPRESS keeps a top-level -v when absent.
        _add_verbose(command, argparse.SUPPRESS)
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


def checked_run(args: argparse.Namespace) -> int:
    """The command of ``args``, after every check of its flags: each mistake is a
    ``UsageError`` (exit 2) before anything is fetched, converted or created."""
    from pipeline import run_flags

    module = load(args.command)
    run_flags.check_args(args, writes=COMMANDS[args.command].writes)
    check = getattr(module, "check", None)
    if check is not None:
        check(args)
    return module.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mnist-tfx ARGV``; the exit code (see ``cli``'s docstring)."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    return run_command(checked_run, args)


def console_main() -> int:
    """The ``mnist-tfx`` console script and ``python -m cli``: ``main``, then the heap
    frozen for the exit. The interpreter's last garbage collection would otherwise walk
    every object TensorFlow, TFX and Beam created, 1.5-2 s after the summary of a
    cached run (py-spy, 2026-11-27), while the process is about to hand its memory
    back anyway. Nothing waits on that collection: logging flushes in its exit handler
    and every file has been closed. Not in ``main``, which tests call in-process."""
    code = main()
    gc.freeze()
    return code
