"""Spans: immutable, numbered conversions of a dataset under one data root.

``<data_root>/span-<N>/{train,eval}/*.tfrecord`` plus its manifest; ExampleGen reads
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
    write_conversion,
)
from ingest.datasets import SPLITS, DatasetInfo, get_dataset
from ingest.fetch import find_idx_files, verify_idx_files
from ingest.idx import read_idx_pair

SPAN_PREFIX = "span-"


def span_dir(data_root: Path | str, span: int) -> Path:
    """Where span ``span`` lives: ``<data_root>/span-<span>/{train,eval}/`` and its
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
        raise ValueError(f"--slice {text!r}: expected START:END with 0 <= START < END")
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
    reproducible). ``train_slice`` keeps training examples START..END-1 only (for
    demos cutting the full set into batches); the eval split is the whole test set,
    so every span's model is measured on the same examples.
    """
    info = dataset if isinstance(dataset, DatasetInfo) else get_dataset(dataset)
    existing = list_spans(data_root)
    if span is None:
        span = existing[-1] + 1 if existing else 0
    if span < 0:
        raise ValueError(f"--span {span}: expected a span number >= 0")
    target = span_dir(data_root, span)
    if target.exists():
        raise FileExistsError(
            f"{target}: span {span} exists already; spans are immutable, ingest the next "
            f"one (--span {existing[-1] + 1 if existing else span + 1})"
        )
    files = find_idx_files(Path(idx_dir), info)
    source_sha256 = verify_idx_files(files, info)
    arrays = {
        split: read_idx_pair(
            files[info.file_for(split, "images").stem], files[info.file_for(split, "labels").stem]
        )
        for split in SPLITS
    }
    extra: dict[str, Any] = {"span": span}
    if train_slice is not None:
        start, end = train_slice
        images, labels = arrays["train"]
        if end > len(labels):
            raise ValueError(
                f"--slice {start}:{end}: the training set in {idx_dir} has {len(labels)} examples"
            )
        arrays["train"] = (images[start:end], labels[start:end])
        extra["train_slice"] = [start, end]
    shards = min(train_shards, len(arrays["train"][1]))
    write_conversion(arrays, target, info, source_sha256, {"train": shards, "eval": 1}, extra)
    return span, dataclasses.replace(load_conversion(target), reused=False)
