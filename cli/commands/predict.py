"""Send one image (PNG/JPEG, IDX index or raw pixels) to a TF Serving compatible server;
print the class name and top-3 probabilities."""

from __future__ import annotations

import argparse

from serving.client import add_predict_arguments, run_predict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_predict_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_predict(args)
