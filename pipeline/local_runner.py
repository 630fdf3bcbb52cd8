"""Local runner: the pipeline on ``LocalDagRunner`` with SQLite ML Metadata and the
Beam DirectRunner, every path taken from a ``RunConfig``. It chooses paths and
the orchestrator and calls ``create_pipeline``; nothing more.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.orchestration.pipeline import Pipeline

from components.data_validator.executor import DataValidationError
from ingest.convert import MANIFEST_FILE, MANIFEST_FORMAT_VERSION, VALIDATION_SEED
from ingest.datasets import SPLITS, get_dataset
from ingest.fetch import fetch_dataset, find_idx_files, verify_idx_files
from ingest.spans import add_next_span, ingest_span, list_spans, span_dir
from pipeline.beam_runners import with_local_dependencies, without_prism_attempt
from pipeline.config import RunConfig
from pipeline.metadata_config import describe_metadata, exclusive_store
from pipeline.pipeline import create_pipeline
from pipeline.served_copy import compile_for_run
from pipeline.settings import PipelinePaths, settings_from_config

# ``written_by`` in a span's manifest: the commands that add spans on their own.
WRITTEN_BY_RUN = "mnist-tfx run"
WRITTEN_BY_CONVERT = "mnist-tfx convert"


@dataclass(frozen=True)
class PreparedData:
    """The TFRecord root a run reads, the span it will read, and whether this call
    wrote that span (and why) or found it there."""

    data_root: Path
    span: int
    written: bool
    reason: str


def _read_manifest(data_root: Path, span: int) -> dict[str, Any]:
    return json.loads((span_dir(data_root, span) / MANIFEST_FILE).read_text(encoding="utf-8"))


def _was_ingested(manifest: dict[str, Any]) -> bool:
    """Added by ``mnist-tfx ingest``: numbered by ``ingest_span`` ("span") and not
    marked as written by run / convert ("written_by"). A format-1 span 0 from
    before spans were numbered has neither and counts as the run's own."""
    return "span" in manifest and "written_by" not in manifest


def _layout(manifest: dict[str, Any]) -> tuple[Any, ...]:
    """What, besides the source files, decides how a span's records were cut:
    the manifest format, the split names and the validation draw's seed."""
    return (
        manifest.get("format_version"),
        tuple(sorted(manifest.get("counts", {}))),
        manifest.get("validation", {}).get("seed"),
    )


def _current_layout() -> tuple[Any, ...]:
    return (MANIFEST_FORMAT_VERSION, tuple(sorted(SPLITS)), VALIDATION_SEED)


def _why_not_reuse(
    manifest: dict[str, Any], span: int, dataset: str, source_sha256: dict[str, str]
) -> str | None:
    """Why span ``span`` (its manifest given) is not a conversion of exactly these
    source files in the current layout, or None when it is."""
    if manifest.get("dataset") != dataset:
        return f"span {span} holds {manifest.get('dataset')!r}, not {dataset!r}"
    recorded = manifest.get("source_sha256", {})
    changed = sorted(
        stem
        for stem in set(recorded) | set(source_sha256)
        if recorded.get(stem) != source_sha256.get(stem)
    )
    if changed:
        return f"the source's sha256 differs from span {span}'s for {', '.join(changed)}"
    if manifest.get("train_slice") is not None:
        return f"span {span} holds training examples {manifest['train_slice']} only"
    found, expected = _layout(manifest), _current_layout()
    if found != expected:
        return (
            f"span {span} has the layout (format, splits, validation seed) {found}, "
            f"the current one is {expected}"
        )
    return None


def _source_dir(config: RunConfig) -> Path:
    """The directory of the four IDX files: ``--source`` itself when it is a
    directory, else where they were fetched to."""
    source_dir = Path(config.source)
    if config.source not in ("auto", "npm", "debian", "mirror") and source_dir.is_dir():
        return source_dir
    return fetch_dataset(get_dataset(config.dataset), config.raw_dir, config.source)


def prepare_span(config: RunConfig, written_by: str = WRITTEN_BY_RUN) -> PreparedData:
    """The span a run of ``config`` reads, written first when needed. Spans are
    immutable: nothing here rewrites one.

    Once spans were added with ``mnist-tfx ingest`` they are the data: nothing is
    converted and the latest span is read. Otherwise the source files are verified
    and compared with the latest span's manifest: the same files (sha256) in the
    current layout reuse it; anything else becomes the next span, so a model
    trained on an earlier span stays traceable to files that still exist.
    """
    info = get_dataset(config.dataset)
    root = config.tfrecord_dir
    spans = list_spans(root)
    manifests = {span: _read_manifest(root, span) for span in spans}
    ingested = [span for span in spans if _was_ingested(manifests[span])]
    if ingested:
        # Spans added by `mnist-tfx ingest` are the data; never add to them here.
        logging.warning(
            "%s holds spans %s (mnist-tfx ingest); the run reads span %d and converts nothing",
            root,
            spans,
            spans[-1],
        )
        return PreparedData(root, spans[-1], False, "spans were added with mnist-tfx ingest")
    idx_dir = _source_dir(config)
    source_sha256 = verify_idx_files(find_idx_files(idx_dir, info), info)
    if spans:
        reason = _why_not_reuse(manifests[spans[-1]], spans[-1], info.name, source_sha256)
        if reason is None:
            logging.info("span %d of %s holds these source files; reusing it", spans[-1], root)
            return PreparedData(root, spans[-1], False, f"span {spans[-1]} holds these files")
    else:
        reason = "there is no span yet"
    span, _ = add_next_span(
        idx_dir,
        root,
        info,
        {"written_by": written_by, "written_because": reason, "source_dir": str(idx_dir)},
    )
    if spans:
        logging.warning("wrote span %d of %s from %s: %s", span, root, idx_dir, reason)
    else:
        logging.info("wrote span %d of %s from %s", span, root, idx_dir)
    return PreparedData(root, span, True, reason)


def prepare_data(config: RunConfig) -> Path:
    """The TFRecord root of ``config``, its latest span ready (``prepare_span``)."""
    return prepare_span(config).data_root


def ingest(config: RunConfig, span: int | None, train_slice: tuple[int, int] | None):
    """``mnist-tfx ingest``: the IDX files of ``config.source`` (fetched if needed) as
    the next span under the TFRecord root; returns (span, ConversionResult)."""
    info = get_dataset(config.dataset)
    return ingest_span(_source_dir(config), config.tfrecord_dir, info, span, train_slice)


def _absolute(path: Path | str) -> str:
    """A local path made absolute; an object-store URL as it is."""
    return path if isinstance(path, str) else str(path.resolve())


def build_pipeline(config: RunConfig, data_root: Path) -> Pipeline:
    """The pipeline of ``config`` on local paths, with its ML Metadata connection."""
    settings = settings_from_config(config, metadata_connection_config=config.metadata_connection)
    paths = PipelinePaths(
        pipeline_name=config.name,
        pipeline_root=str(config.pipeline_root.resolve()),
        data_root=str(data_root.resolve()),
        serving_model_dir=_absolute(config.serving_model_dir),
    )
    config.pipeline_dir.mkdir(parents=True, exist_ok=True)
    # The executors run on this machine (here or in Airflow's tasks): with the
    # DirectRunner, stop TFX packaging itself for workers that need no package, and
    # Beam trying the Prism runner before the one it ends on here.
    local_args = with_local_dependencies(settings.runtime.beam_pipeline_args)
    runtime = dataclasses.replace(
        settings.runtime, beam_pipeline_args=tuple(without_prism_attempt(local_args))
    )
    return create_pipeline(paths, dataclasses.replace(settings, runtime=runtime))


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
            # As LocalDagRunner.run, but a served copy deleted since the last push
            # makes the Pusher run again (pipeline/served_copy.py).
            LocalDagRunner().run_with_ir(compile_for_run(pipeline, connection))
        except DataValidationError as error:
            # The validator knows artifacts, not where the user's data came from.
            raise DataValidationError(f"{data_root}: {error}") from None
