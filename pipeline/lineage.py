"""Pushed versions and their lineage, read from ML Metadata: for every integer
version under a serving base path, the push that wrote it, the Evaluator's
accuracy and blessing, the Trainer's model and hyperparameters, and the
ExampleGen input with the sha256 of the IDX files it was converted from.

Reads only (the CLI's ``versions`` command prints it); the MLMD helpers it shares
with the run summary live in ``pipeline/run_summary.py``. The source checksums are
the ones recorded when the data was used, never the span's manifest as it is now
(a manifest can be replaced or deleted after a model was trained on it): first the
``training_sources`` property the Pusher set on the PushedModel artifact (from
``assets.extra/lineage/sources.json`` inside the pushed model), else the
``source_sha256`` property ExampleGen set on the Examples artifact when it imported
the span. ``lineage_from`` says which; a version with neither says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.run_summary import (
    custom_property,
    open_store,
    output_artifacts,
    read_accuracy,
    span_of,
)
from serving.publish import list_versions, rollback_sources, version_mtime


@dataclass
class VersionLineage:
    version: int
    path: str
    pushed_at: str
    accuracy: float | None = None
    blessed: bool | None = None
    dataset: str | None = None
    model: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    # The span of the data the model was trained on (ExampleGen's Examples artifact).
    span: int | None = None
    training_spans: list[int] = field(default_factory=list)
    # The newest training span's source files (stem -> sha256 of the uncompressed IDX).
    source_sha256: dict[str, str] = field(default_factory=dict)
    # Per training span: dataset, span, source_sha256 (and manifest_sha256, counts).
    training_sources: list[dict[str, Any]] = field(default_factory=list)
    # Where the checksums come from: LINEAGE_FROM_PUSH, LINEAGE_FROM_EXAMPLES or None.
    lineage_from: str | None = None
    mlmd_ids: dict[str, int] = field(default_factory=dict)
    # Set when `mnist-tfx rollback` published this version as a copy of an older one.
    rollback_of: int | None = None


LINEAGE_FROM_PUSH = "recorded at push time (PushedModel training_sources)"
LINEAGE_FROM_EXAMPLES = "recorded at ingest time (Examples artifact source_sha256)"


def _exec_property(execution: metadata_store_pb2.Execution, name: str) -> Any:
    if name in execution.custom_properties:
        value = execution.custom_properties[name]
    elif name in execution.properties:
        value = execution.properties[name]
    else:
        return None
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _producer(store: metadata_store.MetadataStore, artifact_id: int) -> int | None:
    for event in store.get_events_by_artifact_ids([artifact_id]):
        if event.type in (
            metadata_store_pb2.Event.OUTPUT,
            metadata_store_pb2.Event.DECLARED_OUTPUT,
        ):
            return event.execution_id
    return None


def _inputs(store: metadata_store.MetadataStore, execution_id: int) -> dict[str, int]:
    found = {}
    for event in store.get_events_by_execution_ids([execution_id]):
        if event.type in (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT):
            key = event.path.steps[0].key if event.path.steps else ""
            found.setdefault(key, event.artifact_id)
    return found


def _original_pushes(store: metadata_store.MetadataStore) -> dict[str, metadata_store_pb2.Artifact]:
    """pushed_version -> the PushedModel artifact that first published it."""
    pushes: dict[str, metadata_store_pb2.Artifact] = {}
    for artifact in sorted(store.get_artifacts_by_type("PushedModel"), key=lambda a: a.id):
        version = custom_property(artifact, "pushed_version")
        if custom_property(artifact, "pushed") and version and version not in pushes:
            pushes[version] = artifact
    return pushes


def _use_sources(lineage: VersionLineage, sources: list[dict[str, Any]], origin: str) -> None:
    """Take the checksums of ``sources`` (one entry per training span); the newest
    span's files are the version's ``source_sha256``."""
    recorded = [entry for entry in sources if entry.get("source_sha256")]
    if not recorded:
        return
    newest = max(recorded, key=lambda entry: entry.get("span") or 0)
    lineage.training_sources = sources
    lineage.source_sha256 = dict(newest["source_sha256"])
    lineage.dataset = newest.get("dataset")
    lineage.lineage_from = origin


def _pushed_sources(push: metadata_store_pb2.Artifact) -> list[dict[str, Any]]:
    raw = custom_property(push, "training_sources")
    if not raw:
        return []
    try:
        return list(json.loads(raw).get("sources", []))
    except (ValueError, AttributeError):
        return []


def _examples_sources(examples: list[metadata_store_pb2.Artifact]) -> list[dict[str, Any]]:
    """What ExampleGen recorded on each Examples artifact when it imported its span."""
    sources = []
    for artifact in sorted(examples, key=lambda a: (span_of(a) or 0, a.id)):
        raw = custom_property(artifact, "source_sha256")
        if not raw:
            continue
        sources.append(
            {
                "dataset": custom_property(artifact, "dataset"),
                "span": span_of(artifact),
                "source_sha256": json.loads(raw),
                "manifest_sha256": custom_property(artifact, "manifest_sha256"),
            }
        )
    return sources


def _data_lineage(
    store: metadata_store.MetadataStore, examples_id: int, lineage: VersionLineage
) -> None:
    example_gen_id = _producer(store, examples_id)
    if example_gen_id is None:
        return
    lineage.mlmd_ids["examplegen_execution"] = example_gen_id
    (example_gen,) = store.get_executions_by_id([example_gen_id])
    lineage.data_root = _exec_property(example_gen, "input_base")
    (examples,) = store.get_artifacts_by_id([examples_id])
    lineage.span = span_of(examples)


def version_lineage(
    store: metadata_store.MetadataStore, version: int, path: str, push: Any
) -> VersionLineage:
    lineage = VersionLineage(
        version=version,
        path=path,
        pushed_at=datetime.fromtimestamp(version_mtime(path), timezone.utc).isoformat(
            timespec="seconds"
        ),
    )
    if push is None:
        return lineage
    lineage.mlmd_ids["pushed_model_artifact"] = push.id
    _use_sources(lineage, _pushed_sources(push), LINEAGE_FROM_PUSH)
    pusher_id = _producer(store, push.id)
    if pusher_id is None:
        return lineage
    lineage.mlmd_ids["pusher_execution"] = pusher_id
    inputs = _inputs(store, pusher_id)
    if "model_blessing" in inputs:
        (blessing,) = store.get_artifacts_by_id([inputs["model_blessing"]])
        lineage.blessed = bool(custom_property(blessing, "blessed"))
        evaluator_id = _producer(store, blessing.id)
        if evaluator_id is not None:
            lineage.mlmd_ids["evaluator_execution"] = evaluator_id
            evaluation = output_artifacts(store, evaluator_id).get("evaluation")
            if evaluation:
                lineage.accuracy = read_accuracy(evaluation[0].uri)[0]
    if "model" in inputs:
        lineage.mlmd_ids["model_artifact"] = inputs["model"]
        trainer_id = _producer(store, inputs["model"])
        if trainer_id is not None:
            lineage.mlmd_ids["trainer_execution"] = trainer_id
            (trainer,) = store.get_executions_by_id([trainer_id])
            config = json.loads(_exec_property(trainer, "custom_config") or "{}")
            lineage.hparams = config.get("hparams", {})
            lineage.model = lineage.hparams.get("model")
            # With --spans K the Trainer read several spans: follow the newest.
            examples = output_artifacts(store, trainer_id, (metadata_store_pb2.Event.INPUT,)).get(
                "examples", []
            )
            lineage.training_spans = sorted(s for s in map(span_of, examples) if s is not None)
            newest = max(examples, key=lambda a: (span_of(a) or 0, a.id), default=None)
            examples_id = newest.id if newest is not None else None
            if examples_id is not None:
                lineage.mlmd_ids["examples_artifact"] = examples_id
                _data_lineage(store, examples_id, lineage)
            if lineage.lineage_from is None:
                _use_sources(lineage, _examples_sources(examples), LINEAGE_FROM_EXAMPLES)
    return lineage


def list_version_lineage(metadata_path: str, serving_model_dir: str) -> list[VersionLineage]:
    """Every version on disk, newest first, with what MLMD knows about it."""
    store = open_store(metadata_path)
    pushes = _original_pushes(store)
    restores = rollback_sources(serving_model_dir)
    rows = []
    for version in reversed(list_versions(serving_model_dir)):
        # A rollback copy has the lineage of the version it restores (followed
        # through rollbacks of rollbacks).
        origin, seen = version, set()
        while origin in restores and origin not in seen:
            seen.add(origin)
            origin = restores[origin]
        row = version_lineage(
            store, version, os.path.join(serving_model_dir, str(version)), pushes.get(str(origin))
        )
        row.rollback_of = restores.get(version)
        rows.append(row)
    return rows


def format_versions(rows: list[VersionLineage]) -> str:
    if not rows:
        return "no pushed versions"
    lines = [
        f"{'version':<12} {'accuracy':<9} {'dataset':<14} {'model':<13} "
        f"{'pushed at (UTC)':<26} lineage"
    ]
    for row in rows:
        accuracy = f"{row.accuracy:.4f}" if row.accuracy is not None else "?"
        ids = " ".join(f"{k}={v}" for k, v in row.mlmd_ids.items()) or "not in this metadata store"
        if row.rollback_of is not None:
            ids = f"rollback of {row.rollback_of}; {ids}"
        lines.append(
            f"{row.version:<12} {accuracy:<9} {row.dataset or '?':<14} {row.model or '?':<13} "
            f"{row.pushed_at:<26} {ids}"
        )
        if row.span is not None:
            spans = ", ".join(map(str, row.training_spans)) or str(row.span)
            lines.append(
                f"{'':<12} data span {row.span} of {row.data_root} (trained on span(s) {spans})"
            )
        if row.lineage_from is None:
            lines.append(f"{'':<12} data sha256 not recorded for this version")
            continue
        for source in row.training_sources:
            if len(row.training_sources) > 1:
                lines.append(f"{'':<12} span {source.get('span')}:")
            for stem, digest in sorted(source.get("source_sha256", {}).items()):
                lines.append(f"{'':<12} data {stem} sha256 {digest}")
        lines.append(f"{'':<12} (sha256 {row.lineage_from})")
    return "\n".join(lines)


def versions_json(rows: list[VersionLineage]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)


# Version numbers below this are not Unix timestamps (2001-09-09): a hand-made "1", "2".
_FIRST_TIMESTAMP_VERSION = 1_000_000_000


@dataclass(frozen=True)
class ServedModelAge:
    """How old the model being served is: the served version, the version whose push
    first published that model (they differ after a rollback), and when that was."""

    served: int
    origin: int
    pushed_at: datetime

    def days(self, now: datetime) -> float:
        return (now - self.pushed_at).total_seconds() / 86400


def served_model_age(serving_model_dir: str) -> ServedModelAge | None:
    """The age of the model TF Serving serves from ``serving_model_dir`` (the newest
    version, followed back through rollbacks), or None when nothing is served.

    A rollback copy is as old as the model it restores, not as the copy. Our Pusher
    names versions by the Unix time of the push (TFX's convention), so the origin's
    number is its push time even after the origin itself was pruned; for a version not
    named that way, its directory's modification time is used. ValueError when neither
    tells (a hand-named origin that no longer exists).
    """
    from components.served_model.resolver import served_version

    found = served_version(serving_model_dir)
    if found is None:
        return None
    served, origin = found
    if origin >= _FIRST_TIMESTAMP_VERSION:
        pushed_at = datetime.fromtimestamp(origin, timezone.utc)
    else:
        # list_versions: complete versions only, on a local disk or an object store.
        if origin not in list_versions(serving_model_dir):
            raise ValueError(
                f"{serving_model_dir}: version {served} restores version {origin}, which is "
                "gone and not named by its push time; its age is unknown"
            )
        path = os.path.join(serving_model_dir, str(origin))
        pushed_at = datetime.fromtimestamp(version_mtime(path), timezone.utc)
    return ServedModelAge(served=served, origin=origin, pushed_at=pushed_at)
