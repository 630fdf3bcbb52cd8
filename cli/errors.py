"""Exit codes, and the errors of the layers below mapped to them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_NOT_BLESSED, EXIT_BUSY = 0, 1, 2, 3, 4


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``command(args)``'s exit code; a known error is printed as ``error: ...`` and
    becomes its exit code, anything else propagates (a traceback, exit 1)."""
    from ingest.fetch import DataIntegrityError, FetchError
    from ingest.idx import IdxFormatError
    from pipeline.metadata_config import MetadataConnectionError
    from pipeline.metadata_lock import MetadataBusyError
    from serving.verify import ModelVerificationError

    try:
        return command(args)
    except MetadataBusyError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BUSY
    except MetadataConnectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (IdxFormatError, DataIntegrityError, FetchError, ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModelVerificationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE


def require_metadata_store(config) -> None:
    """ValueError (exit 2) if the run's ML Metadata store is a SQLite file that does
    not exist: no run has written it yet."""
    from pipeline.metadata_config import sqlite_path

    path = sqlite_path(config.metadata_connection)
    if path is not None and not path.exists():
        raise ValueError(f"no metadata store at {path}; run the pipeline first")
