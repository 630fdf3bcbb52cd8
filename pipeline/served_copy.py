"""A cached Pusher must not hide a served copy that is gone.

The Pusher is the one component whose result lives outside the pipeline root: the
version directory it publishes under the serving base path. TFX's cache knows only
ML Metadata, so once a served version is deleted by hand (or by a tool that is not
the Pusher) a run whose inputs are unchanged answers the Pusher from the cache: it
reports the version it pushed before, at a path that no longer exists, and serves
nothing. That happens as soon as the deleted version was the only one, since the
Evaluator then gets no baseline, as in the first run, and is cached too.

``compile_for_run`` compiles the pipeline as ``LocalDagRunner.run`` does and, when
the newest push of this pipeline's Pusher is missing from where it was published (a
local path or an ``s3://`` / ``gs://`` serving root),
turns TFX's cache off for the Pusher node alone. The Pusher then runs: its model is
no longer the newest served version, so it publishes it again as a new version,
and the EvaluationReport after it records that push. With the served copy in
place nothing changes, and a run with nothing new stays all CACHED.
"""

from __future__ import annotations

import logging

from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration.pipeline import Pipeline
from tfx.proto.orchestration import pipeline_pb2

from pipeline.metadata_config import sqlite_path
from serving import object_store

PUSHER_NODE = "Pusher"
_FINISHED = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)


def newest_push_destination(
    connection: metadata_store_pb2.ConnectionConfig, pipeline_name: str
) -> str | None:
    """Where the newest finished execution of the pipeline's Pusher published its
    model (the PushedModel's ``pushed_destination``); None when there is no store
    yet, no such execution, or it pushed nothing (model not blessed)."""
    from pipeline.run_summary import custom_property, open_store, output_artifacts

    sqlite_file = sqlite_path(connection)
    if sqlite_file is not None and not sqlite_file.exists():
        return None
    store = open_store(connection)
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{PUSHER_NODE}")
    if context is None:
        return None
    finished = [
        e for e in store.get_executions_by_context(context.id) if e.last_known_state in _FINISHED
    ]
    if not finished:
        return None
    newest = max(finished, key=lambda e: e.id)
    pushed = output_artifacts(store, newest.id).get("pushed_model", [])
    if not pushed or not custom_property(pushed[0], "pushed"):
        return None
    return custom_property(pushed[0], "pushed_destination") or None


def missing_served_copy(
    connection: metadata_store_pb2.ConnectionConfig, pipeline_name: str
) -> str | None:
    """The newest push's destination when its ``saved_model.pb`` (the file the Pusher
    publishes last, on a local disk or an object store) is gone, else None. A store
    that cannot be asked (unreachable, no credentials) leaves the cache as it is, with
    a warning: the check must not fail a run that TFX would answer from its cache."""
    destination = newest_push_destination(connection, pipeline_name)
    if not destination:
        return None
    try:
        present = object_store.exists(object_store.join(destination, "saved_model.pb"))
    except OSError as error:  # ObjectStoreError included
        logging.warning(
            "%s: cannot tell whether the newest push, %s, is still there (%s); "
            "TFX's cache decides for the Pusher",
            pipeline_name,
            destination,
            error,
        )
        return None
    return None if present else destination


def disable_cache(ir: pipeline_pb2.Pipeline, node_id: str) -> None:
    """Turn TFX's cache off for one node of a compiled pipeline."""
    for node in ir.nodes:
        if node.pipeline_node.node_info.id == node_id:
            node.pipeline_node.execution_options.caching_options.enable_cache = False
            return
    raise KeyError(f"no node {node_id!r} in pipeline {ir.pipeline_info.id!r}")


def compile_for_run(
    pipeline: Pipeline, connection: metadata_store_pb2.ConnectionConfig
) -> pipeline_pb2.Pipeline:
    """The pipeline IR as ``LocalDagRunner.run`` compiles it, with the Pusher's cache
    off when the newest push's served copy is gone (module docstring). ``connection``:
    the pipeline's ML Metadata store."""
    from tfx.orchestration.portable import tfx_runner

    ir = tfx_runner._make_pipeline_proto(pipeline)
    if not pipeline.enable_cache:
        return ir
    missing = missing_served_copy(connection, ir.pipeline_info.id)
    if missing:
        logging.warning(
            "%s: the newest push, %s, is gone; the Pusher runs again instead of "
            "answering from the cache",
            ir.pipeline_info.id,
            missing,
        )
        disable_cache(ir, PUSHER_NODE)
    return ir
