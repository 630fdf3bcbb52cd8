"""``pipeline.kubeflow_runner``: the pipeline compiled for Kubeflow Pipelines v2 /
Vertex has the local pipeline's steps and edges, runs our executors in the given
image with the given Beam arguments and paths, and is a file the ``kfp`` client
and the Vertex SDK take; the Dockerfile that builds that image, checked offline.
No cluster, no image build, no training.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import grimp
import pytest
import yaml

from pipeline import kubeflow_runner
from pipeline.beam_runners import beam_pipeline_args
from pipeline.config import RunConfig
from pipeline.pipeline import COMPONENT_ORDER, PREPROCESSING_FN, RUN_FN
from serving import s3_startup
from tests.kfp_launcher import IMAGE_ENV
from trainer.hparams import hparams_from_overrides

REPO = Path(__file__).resolve().parents[2]
IMAGE = "europe-docker.pkg.dev/example/ml/mnist-tfx:abc123"
ROOT = "gs://example-bucket/tfx/mnist"
DATA_ROOT = "gs://example-bucket/data/tfrecords/mnist"
SERVING = "gs://example-bucket/serving/mnist"
BEAM = beam_pipeline_args(
    "dataflow",
    [
        "--project=example-project",
        "--region=europe-west4",
        "--temp_location=gs://example-bucket/beam-tmp",
    ],
)
RESOLVER = "latest_blessed_model_resolver"
# KubeflowV2DagRunner splits the latest-blessed-model resolver into two queries
# (step_builder.py, _MODEL_BLESSING_RESOLVER_SUFFIX / _MODEL_RESOLVER_SUFFIX).
RESOLVER_TASKS = (f"{RESOLVER}-model-blessing-resolver", f"{RESOLVER}-model-resolver")
CUSTOM_EXECUTORS = {
    "ExampleGen": "components.example_gen.executor.Executor",
    "Pusher": "components.pusher.executor.AtomicPushExecutor",
    "EvaluationReport": "components.evaluation_report.executor.EvaluationReportExecutor",
}
ENTRYPOINT = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]


def _config(**overrides) -> RunConfig:
    settings = {
        "dataset": "mnist",
        "beam_args": tuple(BEAM),
        "hparams": hparams_from_overrides({"epochs": 2}, dataset="mnist").to_params(),
    }
    settings.update(overrides)
    return RunConfig(**settings)


def _build(config: RunConfig | None = None):
    return kubeflow_runner.build_kubeflow_pipeline(
        config or _config(), pipeline_root=ROOT, data_root=DATA_ROOT, serving_model_dir=SERVING
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The local pipeline object, the PipelineJob JSON and the PipelineSpec YAML."""
    out = tmp_path_factory.mktemp("kubeflow")
    local = _build()
    kubeflow_runner.compile_pipeline(_build(), IMAGE, out / "pipeline.json")
    kubeflow_runner.compile_pipeline(_build(), IMAGE, out / "pipeline.yaml")
    job = json.loads((out / "pipeline.json").read_text())
    return SimpleNamespace(
        local=local,
        job=job,
        spec=job["pipelineSpec"],
        yaml_path=out / "pipeline.yaml",
        yaml_spec=yaml.safe_load((out / "pipeline.yaml").read_text()),
    )


def _node_id(task: str) -> str:
    for suffix in ("-model-blessing-resolver", "-model-resolver"):
        if task.endswith(suffix):
            return task[: -len(suffix)]
    return task


def _container(spec: dict, task: str) -> dict:
    label = spec["components"][task]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]


def _parameter(spec: dict, task: str, name: str):
    return spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"][name]["runtimeValue"][
        "constantValue"
    ]["stringValue"]


def test_every_local_step_is_a_task(compiled):
    local_ids = [node.id for node in compiled.local.components]
    assert set(local_ids) == set(COMPONENT_ORDER) | {RESOLVER}
    tasks = set(compiled.spec["root"]["dag"]["tasks"])
    assert tasks == (set(local_ids) - {RESOLVER}) | set(RESOLVER_TASKS)
    assert compiled.local.metadata_connection_config is None


def test_dag_edges_are_the_local_pipelines(compiled):
    local_edges = {
        (upstream.id, node.id)
        for node in compiled.local.components
        for upstream in node.upstream_nodes
    }
    compiled_edges = set()
    for task, body in compiled.spec["root"]["dag"]["tasks"].items():
        producers = set(body.get("dependentTasks", []))
        producers |= {
            artifact["taskOutputArtifact"]["producerTask"]
            for artifact in body.get("inputs", {}).get("artifacts", {}).values()
        }
        for producer in producers:
            edge = (_node_id(producer), _node_id(task))
            # The resolver's second query reads the first: one node locally.
            if edge[0] != edge[1]:
                compiled_edges.add(edge)
    assert compiled_edges == local_edges
    assert (RESOLVER, "Evaluator") in compiled_edges


def test_same_settings_as_the_local_runner(tmp_path):
    """Every step gets what ``local_runner.build_pipeline`` gives it, but the paths."""
    from pipeline.local_runner import build_pipeline

    config = _config(
        output_root=tmp_path / "out",
        min_accuracy=0.5,
        min_class_accuracy=0.25,
        max_accuracy_drop=0.01,
        keep_versions=2,
        enable_cache=False,
    )
    local = build_pipeline(config, tmp_path / "tfrecords")
    kubeflow = _build(config)
    # Kubeflow's compiler takes only TFX's own resolver strategies, so there one
    # latest-blessed-model resolver serves the validator and the gate; locally two
    # served-model resolvers do (one before each). The other nodes are the same.
    local_resolvers = ("served_model_data_resolver", "served_model_resolver")
    kubeflow_ids = [node.id for node in kubeflow.components]
    assert kubeflow_ids.index(RESOLVER) < kubeflow_ids.index("ExampleValidator")
    assert [i for i in kubeflow_ids if i != RESOLVER] == [
        node.id for node in local.components if node.id not in local_resolvers
    ]
    assert kubeflow.beam_pipeline_args == local.beam_pipeline_args
    assert kubeflow.enable_cache is local.enable_cache is False
    paths = {("ExampleGen", "input_base"), ("Pusher", "push_destination")}
    for mine, theirs in zip(
        [n for n in kubeflow.components if n.id != RESOLVER],
        [n for n in local.components if n.id not in local_resolvers],
        strict=True,
    ):
        for name, value in theirs.exec_properties.items():
            if (mine.id, name) not in paths:
                assert mine.exec_properties[name] == value, (mine.id, name)
        assert set(mine.exec_properties) == set(theirs.exec_properties), mine.id


def test_steps_run_our_executors_in_the_image_with_the_beam_args(compiled):
    for node in compiled.local.components:
        if node.id == RESOLVER:
            continue
        container = _container(compiled.spec, node.id)
        assert container["image"] == IMAGE, node.id
        assert container["command"] == ENTRYPOINT, node.id
        args = container["args"]
        executor = args[args.index("--executor_class_path") + 1]
        executor_class = node.executor_spec.executor_class
        assert executor == f"{executor_class.__module__}.{executor_class.__qualname__}"
        assert args[args.index("--json_serialized_invocation_args") + 2 :] == BEAM, node.id
    for task, executor in CUSTOM_EXECUTORS.items():
        args = _container(compiled.spec, task)["args"]
        assert args[args.index("--executor_class_path") + 1] == executor
    # FileBasedExampleGen's driver (spans, fingerprints) runs before the cache check.
    driver = _container(compiled.spec, "ExampleGen")["lifecycle"]["preCacheCheck"]
    assert driver["command"][-1] == "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver"
    assert driver["args"][-len(BEAM) :] == BEAM


def test_resolver_queries_the_latest_blessed_model(compiled):
    executors = compiled.spec["deploymentSpec"]["executors"]
    blessing, model = (
        executors[compiled.spec["components"][task]["executorLabel"]]["resolver"]
        for task in RESOLVER_TASKS
    )
    assert (
        "metadata.blessed.number_value=1"
        in blessing["outputArtifactQueries"]["model_blessing"]["filter"]
    )
    assert "current_model_id" in model["outputArtifactQueries"]["model"]["filter"]


def test_name_root_paths_and_settings(compiled):
    spec = compiled.spec
    assert spec["pipelineInfo"]["name"] == "mnist-cnn"
    assert compiled.job["displayName"] == "mnist-cnn"
    assert spec["defaultPipelineRoot"] == ROOT
    assert compiled.job["runtimeConfig"]["gcsOutputDirectory"] == ROOT
    assert _parameter(spec, "ExampleGen", "input_base") == DATA_ROOT
    destination = json.loads(_parameter(spec, "Pusher", "push_destination"))
    assert destination == {"filesystem": {"base_directory": SERVING}}
    trainer_config = json.loads(_parameter(spec, "Trainer", "custom_config"))
    assert trainer_config["hparams"] == _config().hparams
    assert trainer_config["hparams"]["epochs"] == 2
    assert _parameter(spec, "Transform", "preprocessing_fn") == PREPROCESSING_FN
    assert _parameter(spec, "Trainer", "run_fn") == RUN_FN
    # Nothing of this machine in the file: no absolute local path, no checkout.
    text = json.dumps(compiled.job)
    assert str(REPO) not in text
    assert not re.search(r'"/(home|work|tmp|root)/', text)


def test_yaml_is_the_spec_the_kfp_client_uploads(compiled):
    client = pytest.importorskip("kfp.client.client")
    assert compiled.yaml_spec == compiled.spec
    # What Client.create_run_from_pipeline_package and create_recurring_run parse.
    document = client._extract_pipeline_yaml(str(compiled.yaml_path))
    assert document.pipeline_spec.pipeline_info.name == "mnist-cnn"
    assert document.pipeline_spec.default_pipeline_root == ROOT
    assert set(document.pipeline_spec.root.dag.tasks) == set(compiled.spec["root"]["dag"]["tasks"])


def test_the_container_can_rebuild_every_output_artifact(compiled):
    """The entrypoint rebuilds artifacts from their schema titles before it runs
    an executor; a custom type whose title is not its import path fails there."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils

    types_by_step = {
        node.id: {key: channel.type for key, channel in node.outputs.items()}
        for node in compiled.local.components
        if node.id != RESOLVER
    }
    for task, expected in types_by_step.items():
        outputs = compiled.spec["components"][task]["outputDefinitions"]["artifacts"]
        assert set(outputs) == set(expected), task
        for key, definition in outputs.items():
            artifacts = pipeline_spec_pb2.ExecutorInput.Outputs()
            json_format.ParseDict(
                {
                    "artifacts": {
                        key: {"artifacts": [{"type": definition["artifactType"], "uri": ROOT}]}
                    }
                },
                artifacts,
            )
            rebuilt = kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(artifacts.artifacts)
            assert type(rebuilt[key][0]) is expected[key], (task, key)


@pytest.mark.parametrize(
    ("type_name", "problem"),
    [
        ("EvaluationReport", "is not a Kubeflow schema title"),
        ("components.NoSuchArtifact", "gives None, not this class"),
    ],
)
def test_custom_artifact_types_kubeflow_cannot_load_are_refused(type_name, problem):
    from tfx import types

    artifact_type = type("ReportLike", (types.Artifact,), {"TYPE_NAME": type_name})
    node = SimpleNamespace(id="Report", outputs={"report": SimpleNamespace(type=artifact_type)})
    with pytest.raises(ValueError, match=r"Report\.outputs\['report'\]") as error:
        kubeflow_runner.check_custom_artifact_types(SimpleNamespace(components=[node]))
    assert problem in str(error.value)


def test_names_and_paths_kubeflow_cannot_use_are_refused():
    assert kubeflow_runner.kubeflow_pipeline_name("fashion_mnist_deep_cnn") == (
        "fashion-mnist-deep-cnn"
    )
    with pytest.raises(ValueError, match="Kubeflow needs"):
        kubeflow_runner.kubeflow_pipeline_name("mnist.cnn")
    with pytest.raises(ValueError, match="--pipeline-root 'tfx_output': expected a URI"):
        kubeflow_runner.check_location("--pipeline-root", "tfx_output", remote_only=True)
    with pytest.raises(ValueError, match="--data-root 'data/tfrecords/mnist'"):
        kubeflow_runner.check_location("--data-root", "data/tfrecords/mnist")
    assert kubeflow_runner.check_location("--data-root", "/mnt/data/") == "/mnt/data"


def test_command_line(tmp_path, capsys):
    output = tmp_path / "out" / "fashion.yaml"
    argv = [
        "--image", IMAGE, "--pipeline-root", ROOT, "--data-root", DATA_ROOT,
        "--serving-model-dir", SERVING, "--dataset", "fashion_mnist", "--model", "mlp",
        "--param", "epochs=1", "--beam", "direct-mp", "--output", str(output),
    ]  # fmt: skip
    assert kubeflow_runner.main(argv) == 0
    assert "fashion-mnist-mlp" in capsys.readouterr().out
    spec = yaml.safe_load(output.read_text())
    assert spec["pipelineInfo"]["name"] == "fashion-mnist-mlp"
    hparams = json.loads(_parameter(spec, "Trainer", "custom_config"))["hparams"]
    assert (hparams["model"], hparams["epochs"]) == ("mlp", 1)
    args = _container(spec, "StatisticsGen")["args"]
    assert args[-len(beam_pipeline_args("direct-mp")) :] == beam_pipeline_args("direct-mp")

    bad = [*argv[:4], "--data-root", "data/tfrecords", *argv[6:]]
    assert kubeflow_runner.main(bad) == 2
    assert "--data-root 'data/tfrecords'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        kubeflow_runner.main(argv[2:])  # no --image


# --- The Dockerfile: what can be checked without pulling the base image. ---


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_the_image_from_the_lock_file(compiled):
    instructions = _dockerfile_instructions()
    (base,) = [value for kind, value in instructions if kind == "FROM"]
    assert re.fullmatch(r"python:3\.10(\.\d+)?-slim(-bookworm)?", base)
    runs = " ".join(value for kind, value in instructions if kind == "RUN")
    # Every install but pip's own upgrade (pinned as the Makefile's) is held to the lock.
    installs = [c for c in re.findall(r"pip install ([^&;]*)", runs) if "pip==" not in c]
    assert installs and all("-c requirements.lock" in command for command in installs)
    assert any(re.search(r"(^|\s)\.(\s|$)", command) for command in installs)
    # The entrypoint imports kfp.pipeline_spec (kfp-pipeline-spec), not kfp itself.
    assert any("kfp-pipeline-spec" in command for command in installs)
    assert "airflow" not in runs
    env = " ".join(value for kind, value in instructions if kind == "ENV")
    # The entrypoint imports TensorFlow (via TFMA) before any of our packages can
    # select Keras 2, so the image must.
    assert "TF_USE_LEGACY_KERAS=1" in env
    # TFX's own steps open s3:// roots before our code runs: a .pth file registers TF's
    # S3 filesystem at every interpreter start (serving/s3_startup.py), and the test
    # launcher (tests/kfp_launcher.py) sets the same variables as the image.
    assert f'echo "{s3_startup.STARTUP_LINE}"' in runs and ".pth" in runs
    assert f"{s3_startup.ENV}=1" in env
    for name, value in IMAGE_ENV.items():
        assert f"{name}={value}" in env, name
    # Beam's S3 filesystem needs boto3, which nothing else in the image pulls in.
    assert any("boto3" in command for command in installs)

    copied = {
        source.rstrip("/")
        for kind, value in instructions
        if kind == "COPY"
        for source in value.split()[:-1]
        if not source.startswith("--")
    }
    # Every top-level package a step imports by module path: executors, custom
    # artifact types, user code.
    needed = {"pipeline", "setup.py", "requirements.lock"}
    for node in compiled.local.components:
        if node.id != RESOLVER:
            needed.add(node.executor_spec.executor_class.__module__.split(".")[0])
            needed.update(
                channel.type.__module__.split(".")[0] for channel in node.outputs.values()
            )
    needed |= {PREPROCESSING_FN.split(".")[0], RUN_FN.split(".")[0]}
    needed.discard("tfx")
    assert needed >= {"components", "trainer", "pipeline"}
    assert needed <= copied, needed - copied
    # ... and every package of ours those modules import, directly or not (the
    # report's template package, ingest's Example format, serving's verifier, ...).
    ours = ("cli", "pipeline", "trainer", "components", "report", "serving", "ingest")
    graph = grimp.build_graph(*ours)
    step_modules = {
        node.executor_spec.executor_class.__module__
        for node in compiled.local.components
        if node.id != RESOLVER
    } | {PREPROCESSING_FN.rsplit(".", 1)[0], RUN_FN.rsplit(".", 1)[0]}
    step_modules = {module for module in step_modules if module.split(".")[0] in ours}
    imported = {
        upstream.split(".")[0]
        for module in step_modules
        for upstream in graph.find_upstream_modules(module)
    }
    assert imported >= {"components", "report", "serving", "ingest", "trainer"}
    assert imported <= copied, imported - copied
    assert not {".venv", "data", "tfx_output", "bench_output", "."} & copied


def test_dockerignore_keeps_the_venv_and_data_out():
    ignored = {
        line.strip().strip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "data", "tfx_output", "bench_output", ".git"} <= ignored


def test_more_than_one_training_span_is_refused_with_the_reason():
    config = RunConfig(dataset="mnist", num_spans=2)
    with pytest.raises(ValueError, match=r"--spans 2: Kubeflow's compiler supports only"):
        kubeflow_runner.build_kubeflow_pipeline(
            config,
            pipeline_root="gs://example-bucket/root",
            data_root=DATA_ROOT,
            serving_model_dir="gs://example-bucket/serving/mnist",
        )
