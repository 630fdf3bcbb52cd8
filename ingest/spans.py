"""Spans: immutable, numbered conversions of a dataset under one data root.

``<data_root>/span-<N>/{train,validation,test}/*.tfrecord`` plus its manifest; ExampleGen reads
the latest span (or the latest K). A span is never rewritten: ``ingest_span`` adds
the next one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ingest.convert import (
    MANIFEST_FILE,
    ConversionResult,
    load_conversion,
    read_splits,
    write_conversion,
)
from ingest.datasets import DatasetInfo, get_dataset
from ingest.errors import UsageError
from ingest.fetch import find_idx_files, verify_idx_files

SPAN_PREFIX = "span-"


class SpanExistsError(UsageError, FileExistsError):
    """A span that would be written exists already: spans are never rewritten. A
    usage error (exit 2: the message says which span to ingest instead) that is also
    a FileExistsError for callers that catch that."""


def span_dir(data_root: Path | str, span: int) -> Path:
    """Where span ``span`` lives: ``<data_root>/span-<span>/{train,validation,test}/`` and its
    manifest. ExampleGen reads ``span-{SPAN}/train/*`` and picks the latest span."""
    return Path(data_root) / f"{SPAN_PREFIX}{span}"


def list_spans(data_root: Path | str) -> list[int]:
    """The complete spans under ``data_root`` (those with a manifest), ascending."""
    root = Path(data_root)
    if not root.is_dir():
        return []
    spans = []
    for path in root.iterdir():
        number = path.name[len(SPAN_PREFIX) :]
        complete = (path / MANIFEST_FILE).is_file()
        if path.name.startswith(SPAN_PREFIX) and number.isdigit() and complete:
            spans.append(int(number))
    return sorted(spans)


def parse_slice(text: str) -> tuple[int, int]:
    """``START:END`` (END exclusive) as a pair of ints, with a clear error."""
    start, sep, end = text.partition(":")
    if not sep or not start.isdigit() or not end.isdigit() or int(start) >= int(end):
        raise UsageError(f"--slice {text!r}: expected START:END with 0 <= START < END")
    return int(start), int(end)


def ingest_span(
    idx_dir: Path | str,
    data_root: Path | str,
    dataset: DatasetInfo | str,
    span: int | None = None,
    train_slice: tuple[int, int] | None = None,
    train_shards: int = 4,
) -> tuple[int, ConversionResult]:
    """Convert the IDX files in ``idx_dir`` into a new span under ``data_root``.

    ``span`` defaults to one after the latest; an existing span is never
    overwritten (spans are immutable: a run that trained on one must be
    reproducible). ``train_slice`` keeps official training examples START..END-1
    only (for demos cutting the full set into batches); the validation split is held
    out of that slice (1/12 of it, stratified, recorded in the manifest), and the
    test split is the whole official test set, so every span's model is measured on
    the same examples.
    """
    info = dataset if isinstance(dataset, DatasetInfo) else get_dataset(dataset)
    existing = list_spans(data_root)
    if span is None:
        span = existing[-1] + 1 if existing else 0
    if span < 0:
        raise UsageError(f"--span {span}: expected a span number >= 0")
    target = span_dir(data_root, span)
    if target.exists():
        raise SpanExistsError(
            f"{target}: span {span} exists already; spans are immutable, ingest the next "
            f"one (--span {existing[-1] + 1 if existing else span + 1})"
        )
    files = find_idx_files(Path(idx_dir), info)
    source_sha256 = verify_idx_files(files, info)
    arrays, facts = read_splits(files, info, train_slice)
    extra: dict[str, Any] = {"span": span, **facts}
    shards = {"train": min(train_shards, len(arrays["train"][1])), "validation": 1, "test": 1}
    write_conversion(arrays, target, info, source_sha256, shards, extra)
    return span, dataclasses.replace(load_conversion(target), reused=False)


def add_next_span(
    idx_dir: Path | str,
    data_root: Path | str,
    dataset: DatasetInfo | str,
    facts: dict[str, Any],
) -> tuple[int, ConversionResult]:
    """``ingest_span`` into the next span number, with ``facts`` (which command wrote
    the span, and why) in its manifest from the moment the span exists.

    Used by ``mnist-tfx run`` and ``convert``, whose spans must be told apart from
    those added by ``mnist-tfx ingest``. The span is converted by ``ingest_span``
    under a hidden staging root beside the spans (no ``span-`` name, so neither
    ``list_spans`` nor ExampleGen sees it), the facts are added to its manifest
    there, and the finished directory is renamed to ``span-<N>``: an existing
    ``span-<N>``, complete or not, is refused, never replaced.
    """
    import json
    import os
    import shutil
    import uuid

    root = Path(data_root)
    existing = list_spans(root)
    span = existing[-1] + 1 if existing else 0
    target = span_dir(root, span)
    # The directories this call creates, deepest first: removed again (when empty) if
    # the conversion fails, so bad input leaves no trace under the data directory.
    created = [p for p in (root, *root.parents) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".next-span.partial-{uuid.uuid4().hex[:12]}"
    try:
        try:
            ingest_span(idx_dir, staging, dataset, span)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            for path in created:
                try:
                    path.rmdir()
                except OSError:
                    break
            raise
        manifest_path = span_dir(staging, span) / MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest.update(facts)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            raise SpanExistsError(
                f"{target}: span {span} exists already; spans are immutable, remove the "
                f"unfinished directory or add data with mnist-tfx ingest --span {span + 1}"
            )
        os.rename(span_dir(staging, span), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return span, dataclasses.replace(load_conversion(target), reused=False)
