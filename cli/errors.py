"""Exit codes, and the errors of the layers below mapped to them.

Only errors that mean "what you gave is wrong" exit 2: ``UsageError`` (a flag, path
or name, raised by our own checks) and the named errors of bad input data. Any other
exception, a ``ValueError`` or ``PermissionError`` deep inside included, is a failure
of ours or of the machine: exit 1 with one line naming its type, and the traceback
only with ``-v``, since a user cannot fix it by changing a flag but a bug report
needs it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

from ingest.errors import UsageError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_NOT_BLESSED, EXIT_BUSY = 0, 1, 2, 3, 4
# `versions --max-age-days`: the served model is older than allowed, or nothing is served.
EXIT_STALE = 5
# `monitor`: the served traffic is skewed from the training data or drifted from the
# previous window beyond the bounds (6), or the window holds no logged request (7).
EXIT_SKEW, EXIT_NO_REQUESTS = 6, 7
# 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130

# Bad input data, by (module, class): exit 2 with the error's own text, which names the
# file, record, feature or source. Looked up in ``sys.modules`` when an error happens,
# so a command never imports TFX just to classify an error: a class whose module was
# never imported cannot have been raised.
_BAD_INPUT = (
    ("ingest.errors", "UsageError"),
    ("ingest.idx", "IdxFormatError"),
    ("ingest.fetch", "DataIntegrityError"),
    ("ingest.fetch", "FetchError"),
    ("pipeline.metadata_config", "MetadataConnectionError"),
    ("pipeline.settings", "SettingsError"),
    ("components.example_gen.executor", "ExampleFormatError"),
    ("components.data_validator.executor", "DataValidationError"),
)
_BUSY = (("pipeline.metadata_lock", "MetadataBusyError"),)
# Known failures whose text says all (exit 1, no "run with -v").
_KNOWN_FAILURES = (("serving.verify", "ModelVerificationError"),)


def _loaded(names: tuple[tuple[str, str], ...]) -> tuple[type, ...]:
    classes = []
    for module_name, class_name in names:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, class_name):
            classes.append(getattr(module, class_name))
    return tuple(classes)


def exit_code_for(error: BaseException) -> int:
    """The exit code an exception stands for (see ``cli``'s docstring)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, _loaded(_BUSY)):
        return EXIT_BUSY
    if isinstance(error, _loaded(_BAD_INPUT)):
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``command(args)``'s exit code. A known error is printed as ``error: ...`` and
    becomes its exit code; anything else as ``error: <Type>: message (run with -v for
    the traceback)`` and exit 1, with the traceback first when ``args.verbose``."""
    verbose = getattr(args, "verbose", False)
    try:
        return command(args)
    except KeyboardInterrupt:
        if verbose:
            traceback.print_exc()
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every exception ends as an exit code
        code = exit_code_for(error)
        if code != EXIT_FAILURE or isinstance(error, _loaded(_KNOWN_FAILURES)):
            print(f"error: {error}", file=sys.stderr)
            return code
        if verbose:
            traceback.print_exc()
            print(f"error: {type(error).__name__}: {_one_line(str(error))}", file=sys.stderr)
        else:
            print(
                f"error: {type(error).__name__}: {_one_line(str(error))} "
                "(run with -v for the traceback)",
                file=sys.stderr,
            )
        return EXIT_FAILURE


def require_metadata_store(config) -> None:
    """UsageError (exit 2) if the run's ML Metadata store is a SQLite file that does
    not exist: no run has written it yet."""
    from pipeline.metadata_config import sqlite_path

    path = sqlite_path(config.metadata_connection)
    if path is not None and not path.exists():
        flag, value = (
            ("--metadata", config.metadata_path)
            if config.metadata_path
            else ("--output-root", config.output_root)
        )
        raise UsageError(
            f"{flag} {value}: no metadata store at {path}; expected the store of an earlier "
            f"`mnist-tfx run` of pipeline {config.name} (run the pipeline first)"
        )
