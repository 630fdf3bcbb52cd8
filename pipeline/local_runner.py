"""Local runner: the pipeline on ``LocalDagRunner`` with SQLite ML Metadata and the
Beam DirectRunner, every path taken from a ``RunConfig``. It chooses paths and
the orchestrator and calls ``create_pipeline``; nothing more.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tfx import v1 as tfx

from components.data_validator.executor import DataValidationError
from ingest.convert import MANIFEST_FILE, convert_dataset
from ingest.datasets import get_dataset
from ingest.fetch import fetch_dataset
from ingest.spans import ingest_span, list_spans, span_dir
from pipeline.config import RunConfig
from pipeline.metadata_config import describe_metadata, exclusive_store
from pipeline.pipeline import create_pipeline
from pipeline.settings import PipelinePaths, settings_from_config


def _was_ingested(data_root: Path, span: int) -> bool:
    manifest = span_dir(data_root, span) / MANIFEST_FILE
    return "span" in json.loads(manifest.read_text(encoding="utf-8"))


def prepare_data(config: RunConfig) -> Path:
    """Fetch (unless the source is a directory) and convert into span 0; returns the
    TFRecord root, whose latest span the pipeline reads. Once spans were added with
    ``mnist-tfx ingest``, they are the data and nothing is converted here."""
    info = get_dataset(config.dataset)
    spans = list_spans(config.tfrecord_dir)
    ingested = [span for span in spans if _was_ingested(config.tfrecord_dir, span)]
    if ingested:
        # Spans added by `mnist-tfx ingest` are the data; never replace one.
        logging.warning(
            "%s holds spans %s (mnist-tfx ingest); the run reads span %d and converts nothing",
            config.tfrecord_dir,
            spans,
            spans[-1],
        )
        return config.tfrecord_dir
    source_dir = Path(config.source)
    if config.source not in ("auto", "npm", "debian", "mirror") and source_dir.is_dir():
        idx_dir = source_dir
    else:
        idx_dir = fetch_dataset(info, config.raw_dir, config.source)
    convert_dataset(idx_dir, span_dir(config.tfrecord_dir, 0), info)
    return config.tfrecord_dir


def ingest(config: RunConfig, span: int | None, train_slice: tuple[int, int] | None):
    """``mnist-tfx ingest``: the IDX files of ``config.source`` (fetched if needed) as
    the next span under the TFRecord root; returns (span, ConversionResult)."""
    info = get_dataset(config.dataset)
    source_dir = Path(config.source)
    if config.source not in ("auto", "npm", "debian", "mirror") and source_dir.is_dir():
        idx_dir = source_dir
    else:
        idx_dir = fetch_dataset(info, config.raw_dir, config.source)
    return ingest_span(idx_dir, config.tfrecord_dir, info, span, train_slice)


def build_pipeline(config: RunConfig, data_root: Path) -> tfx.dsl.Pipeline:
    """The pipeline of ``config`` on local paths, with its ML Metadata connection."""
    settings = settings_from_config(config, metadata_connection_config=config.metadata_connection)
    paths = PipelinePaths(
        pipeline_name=config.name,
        pipeline_root=str(config.pipeline_root.resolve()),
        data_root=str(data_root.resolve()),
        serving_model_dir=str(config.serving_model_dir.resolve()),
    )
    config.pipeline_dir.mkdir(parents=True, exist_ok=True)
    return create_pipeline(paths, settings)


def run_local(config: RunConfig) -> None:
    """Prepare the data and run the whole pipeline in this process, alone on its
    metadata store (MetadataBusyError otherwise)."""
    # Data first: bad input fails here, before anything under the output root exists.
    data_root = prepare_data(config)
    connection = config.metadata_connection
    with exclusive_store(connection):
        pipeline = build_pipeline(config, data_root)
        logging.info(
            "running pipeline %s (root %s, metadata %s)",
            config.name,
            config.pipeline_root,
            describe_metadata(connection),
        )
        try:
            tfx.orchestration.LocalDagRunner().run(pipeline)
        except DataValidationError as error:
            # The validator knows artifacts, not where the user's data came from.
            raise DataValidationError(f"{data_root}: {error}") from None
