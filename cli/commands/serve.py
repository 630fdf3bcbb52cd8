"""Serve OUTPUT_ROOT/serving/<model> over TF Serving's REST (8501) and gRPC (8500) APIs
on localhost, loading new versions as they are pushed."""

from __future__ import annotations

import argparse

from serving.server import add_serve_arguments, run_serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_serve_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_serve(args)
