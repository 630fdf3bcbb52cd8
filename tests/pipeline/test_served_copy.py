"""A served version deleted by hand is published again by the next run
(``pipeline/served_copy.py``), instead of a cached Pusher naming a path that is gone.

End to end on the committed fixture with the real ``mnist-tfx run`` (LocalDagRunner,
SQLite ML Metadata, Beam's DirectRunner): run 1 pushes a version; it is deleted; run 2
has unchanged inputs (the Evaluator, with no served model to compare against as in
run 1, is answered from TFX's cache) and its Pusher runs and publishes the model
again; run 3 with nothing new is answered from the cache as before.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ml_metadata.proto import metadata_store_pb2

from pipeline.metadata_config import metadata_connection_config
from pipeline.served_copy import PUSHER_NODE, disable_cache, missing_served_copy
from serving.publish import list_versions
from tests.pipeline_fixture import fail_text, pipeline_args, run_cli
from tests.serving_fixture import free_port

RESOLVERS = ("served_model_data_resolver", "served_model_resolver")


def _run(root: Path, name: str) -> tuple[object, dict]:
    summary_path = root / f"{name}.json"
    proc = run_cli(*pipeline_args("mnist", root, "--summary-json", str(summary_path)), cwd=root)
    assert proc.returncode == 0, fail_text(proc)
    return proc, json.loads(summary_path.read_text())


def _states(summary: dict) -> dict[str, str]:
    return {c["name"]: c["state"] for c in summary["components"] if c["name"] not in RESOLVERS}


@pytest.mark.e2e
def test_a_deleted_served_version_is_pushed_again_by_the_next_run(tmp_path):
    serving = tmp_path / "out" / "serving" / "mnist"
    metadata = tmp_path / "out" / "mnist_cnn" / "metadata.sqlite"
    connection = metadata_connection_config(metadata)
    assert missing_served_copy(connection, "mnist_cnn") is None  # no store yet

    _, first = _run(tmp_path, "first")
    [v1] = list_versions(serving)
    assert first["pushed_version"] == str(v1)
    assert missing_served_copy(connection, "mnist_cnn") is None

    shutil.rmtree(serving / str(v1))
    assert list_versions(serving) == []
    assert missing_served_copy(connection, "mnist_cnn") == first["pushed_path"]

    proc, second = _run(tmp_path, "second")
    states = _states(second)
    assert states["Pusher"] == "COMPLETE", states
    # Nothing the model depends on changed: only the push and its report ran again.
    assert states["Trainer"] == states["Evaluator"] == "CACHED", states
    assert states["EvaluationReport"] == "COMPLETE", states
    [v2] = list_versions(serving)
    assert v2 > v1
    assert second["pushed"] is True and second["push_cached"] is False
    assert second["pushed_version"] == str(v2)
    assert second["accuracy"] == first["accuracy"]
    assert (serving / str(v2) / "saved_model.pb").is_file()
    assert f"pushed: version {v2} at " in proc.stdout
    assert f"the newest push, {first['pushed_path']}, is gone" in proc.stderr
    assert missing_served_copy(connection, "mnist_cnn") is None

    proc, third = _run(tmp_path, "third")
    assert set(_states(third).values()) == {"CACHED"}, _states(third)
    assert third["push_cached"] is True and third["pushed_version"] == str(v2)
    assert list_versions(serving) == [v2]
    assert "is gone" not in proc.stderr


def test_disable_cache_names_an_unknown_node():
    from tfx.proto.orchestration import pipeline_pb2

    ir = pipeline_pb2.Pipeline()
    ir.pipeline_info.id = "p"
    node = ir.nodes.add().pipeline_node
    node.node_info.id = PUSHER_NODE
    node.execution_options.caching_options.enable_cache = True
    disable_cache(ir, PUSHER_NODE)
    assert node.execution_options.caching_options.enable_cache is False
    with pytest.raises(KeyError, match="no node 'Trainer' in pipeline 'p'"):
        disable_cache(ir, "Trainer")


def _store_with_pushes(path: Path, pushes: list[tuple[int, str]]):
    """A SQLite ML Metadata store holding, for pipeline ``p``, one finished Pusher
    execution per (pushed, destination), oldest first; its ConnectionConfig."""
    from ml_metadata import metadata_store
    from tfx.types import standard_artifacts

    connection = metadata_connection_config(path)
    store = metadata_store.MetadataStore(connection)
    node_type = store.put_context_type(metadata_store_pb2.ContextType(name="node"))
    [context_id] = store.put_contexts(
        [metadata_store_pb2.Context(type_id=node_type, name=f"p.{PUSHER_NODE}")]
    )
    [context] = store.get_contexts_by_id([context_id])
    artifact_type = store.put_artifact_type(standard_artifacts.PushedModel().artifact_type)
    execution_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name="Pusher"))
    for pushed, destination in pushes:
        artifact = metadata_store_pb2.Artifact(type_id=artifact_type, uri=str(path) + ".a")
        artifact.custom_properties["pushed"].int_value = pushed
        artifact.custom_properties["pushed_destination"].string_value = destination
        execution = metadata_store_pb2.Execution(
            type_id=execution_type, last_known_state=metadata_store_pb2.Execution.COMPLETE
        )
        event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
        event.path.steps.add().key = "pushed_model"
        store.put_execution(execution, [(artifact, event)], [context])
    return connection


def test_only_the_newest_blessed_push_is_checked(tmp_path):
    """A Pusher execution that pushed nothing (model not blessed) leaves nothing to
    check; a version without its saved_model.pb counts as gone."""
    gone = str(tmp_path / "serving" / "7")
    assert missing_served_copy(_store_with_pushes(tmp_path / "a.sqlite", [(1, gone)]), "p") == gone
    unblessed = _store_with_pushes(tmp_path / "b.sqlite", [(1, gone), (0, gone)])
    assert missing_served_copy(unblessed, "p") is None
    (tmp_path / "serving" / "7").mkdir(parents=True)
    assert missing_served_copy(_store_with_pushes(tmp_path / "c.sqlite", [(1, gone)]), "p") == gone
    (tmp_path / "serving" / "7" / "saved_model.pb").write_bytes(b"")
    assert missing_served_copy(_store_with_pushes(tmp_path / "d.sqlite", [(1, gone)]), "p") is None


CHECK = """
import sys
from pipeline.metadata_config import metadata_connection_config
from pipeline.served_copy import missing_served_copy
print("missing:", missing_served_copy(metadata_connection_config(sys.argv[1]), "p"), flush=True)
"""


@pytest.mark.slow
def test_a_push_to_s3_is_checked_on_the_object_store(tmp_path):
    """On a real S3 endpoint (moto): present, then deleted; with the endpoint down the
    cache is left as it is, with a warning naming the push."""
    from tests.s3_fixture import S3Server

    with S3Server(tmp_path) as s3:
        destination = s3.url("mnist", "1795000000")
        metadata = tmp_path / "m.sqlite"
        _store_with_pushes(metadata, [(1, destination)])
        s3.client().put_object(
            Bucket=s3.bucket, Key="mnist/1795000000/saved_model.pb", Body=b"graph"
        )

        def check(env) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-c", CHECK, str(metadata)],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip

        present = check(s3.env())
        assert present.stdout.splitlines()[-1] == "missing: None", present.stderr[-2000:]
        s3.client().delete_object(Bucket=s3.bucket, Key="mnist/1795000000/saved_model.pb")
        deleted = check(s3.env())
        assert deleted.stdout.splitlines()[-1] == f"missing: {destination}", deleted.stderr[-2000:]
        env = s3.env()
    down = check({**env, "S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert down.stdout.splitlines()[-1] == "missing: None", down.stderr[-2000:]
    assert f"cannot tell whether the newest push, {destination}, is still there" in down.stderr
