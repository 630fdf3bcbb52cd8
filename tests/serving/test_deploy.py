"""The production files in ``serving/deploy/`` and what real TF Serving needs from the
export: the configs parse (``models.config`` with the official ModelServerConfig
proto, ``batching_parameters.config`` with TF Serving's BatchingParameters message
built here from its field list, the YAML files with PyYAML), name the models and
paths the pipeline pushes to, agree with each other and with the embedded server's
batching defaults, and ``saved_model_cli show --all`` lists the signatures with the
dtypes and shapes TF Serving will see.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from pipeline.config import RunConfig
from serving import batching
from serving.server import ServerConfig, model_configs_from_file
from tests.serving_fixture import REPO, exported_versions

DEPLOY = REPO / "serving" / "deploy"
CONTAINER_MODELS = Path("/models")
SERVING_IMAGE = "tensorflow/serving:2.16.1"
DATASETS = ("mnist", "fashion_mnist")
BATCHING_FILE = "batching_parameters.config"
BATCHING_FLAGS = {
    "enable_batching": "true",
    "batching_parameters_file": f"/config/{BATCHING_FILE}",
}
# tensorflow.serving.BatchingParameters as TF Serving 2.16.1 defines it in
# tensorflow_serving/servables/tensorflow/session_bundle_config.proto (not shipped in
# the tensorflow-serving-api wheel): name, number, and the wrapper type or scalar type.
_F = descriptor_pb2.FieldDescriptorProto
BATCHING_PARAMETERS_FIELDS = (
    ("max_batch_size", 1, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, _F.TYPE_INT64),
    ("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
    ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue"),
    ("max_execution_batch_size", 9, ".google.protobuf.Int64Value"),
)


def batching_parameters_class() -> type[message.Message]:
    """A message class for tensorflow.serving.BatchingParameters, from a descriptor
    built here with TF Serving's field names, numbers and (wrapper) types, in a pool of
    its own, so text_format parses the deploy file exactly as TF Serving would."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    proto = file.message_type.add(name="BatchingParameters")
    for name, number, kind in BATCHING_PARAMETERS_FIELDS:
        field = proto.field.add(name=name, number=number, json_name=_camel(name))
        if isinstance(kind, str):
            field.label, field.type, field.type_name = _F.LABEL_OPTIONAL, _F.TYPE_MESSAGE, kind
        else:
            field.label = _F.LABEL_REPEATED if name == "allowed_batch_sizes" else _F.LABEL_OPTIONAL
            field.type = kind
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


@pytest.fixture(scope="module")
def batching_parameters_type() -> type[message.Message]:
    return batching_parameters_class()


@pytest.fixture(scope="module")
def model_server_config() -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((DEPLOY / "models.config").read_text(), config)
    return config


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def kubernetes() -> list[dict]:
    return list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))


def test_models_config_names_the_pushed_models(model_server_config):
    """One model per dataset, named as the pipeline names it, at /models/<name>, which is
    where the pipeline's default serving directory for that dataset is mounted."""
    configs = model_server_config.model_config_list.config
    assert [(c.name, c.base_path, c.model_platform) for c in configs] == [
        (name, f"/models/{name}", "tensorflow") for name in DATASETS
    ]
    for name in DATASETS:
        pushed = RunConfig(dataset=name).serving_model_dir
        assert pushed == Path("tfx_output") / "serving" / name
        assert CONTAINER_MODELS / pushed.relative_to("tfx_output/serving") == Path(
            f"/models/{name}"
        )
    mnist = configs[0]
    assert mnist.model_version_policy.latest.num_versions == 2
    assert sorted(mnist.version_labels) == ["canary", "stable"]


def test_embedded_server_reads_the_same_config():
    [mnist, fashion] = model_configs_from_file(DEPLOY / "models.config")
    assert (mnist.name, str(mnist.base_path), mnist.policy.kind, mnist.policy.num_latest) == (
        "mnist",
        "/models/mnist",
        "latest",
        2,
    )
    assert set(mnist.labels) == {"stable", "canary"}
    assert (fashion.name, fashion.policy.num_latest, fashion.labels) == ("fashion_mnist", 1, {})


def test_monitoring_config_enables_prometheus_at_the_embedded_path():
    text = (DEPLOY / "monitoring.config").read_text()
    assert re.search(r"prometheus_config\s*{\s*enable:\s*true\s*path:\s*\"([^\"]+)\"", text)[1] == (
        "/monitoring/prometheus/metrics"
    )


def test_batching_parameters_parse_strictly(batching_parameters_type):
    """The file parses as BatchingParameters; every field it sets is one TF Serving knows,
    and the wrapper-typed ones are written as wrappers (``{ value: N }``)."""
    params = batching_parameters_type()
    text_format.Parse((DEPLOY / BATCHING_FILE).read_text(), params)
    assert [field.name for field, _ in params.ListFields()] == [
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "thread_pool_name",
    ]  # pad_variable_length_inputs: false is proto3's default, so not listed as set
    assert params.thread_pool_name.value
    assert not params.pad_variable_length_inputs
    # TF Serving's own rules for the list: increasing, the last equal to max_batch_size.
    sizes = list(params.allowed_batch_sizes)
    assert sizes == sorted(set(sizes))
    assert not sizes or sizes[-1] == params.max_batch_size.value


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("max_batch_sizes { value: 32 }", 'no field named "max_batch_sizes"'),
        ("max_batch_size: 32", 'Expected "{"'),
        ("batch_timeout_micros { value: 1.5 }", "Couldn't parse integer: 1.5"),
        ("max_batch_size { value: 32 } num_batch_thread { value: 1 }", "num_batch_thread"),
    ],
)
def test_batching_parameters_refuse_mistakes(batching_parameters_type, text, complaint):
    """A misspelt field, a bare number for a wrapper field or a wrong value type fails."""
    with pytest.raises(text_format.ParseError, match=complaint):
        text_format.Parse(text, batching_parameters_type())


def test_batching_parameters_equal_the_embedded_server_defaults(batching_parameters_type):
    """Real TF Serving and the embedded server batch the same way by default."""
    params = batching_parameters_type()
    text_format.Parse((DEPLOY / BATCHING_FILE).read_text(), params)
    defaults = batching.BatchingConfig()
    assert defaults.enabled
    assert params.max_batch_size.value == defaults.max_batch_size == batching.DEFAULT_MAX_BATCH_SIZE
    assert params.batch_timeout_micros.value == round(defaults.timeout_s * 1_000_000)
    assert params.max_enqueued_batches.value == defaults.max_enqueued_batches
    assert (
        params.num_batch_threads.value
        == batching.DEFAULT_BATCH_THREADS
        == ServerConfig(models=model_configs_from_file(DEPLOY / "models.config")).threads
    )


def test_every_deploy_file_enables_batching_with_the_parameters_file(compose, kubernetes):
    """run_tf_serving.sh, docker-compose.yml and kubernetes.yaml all pass
    --enable_batching=true --batching_parameters_file=/config/batching_parameters.config,
    and each puts the file at that path."""
    script = (DEPLOY / "run_tf_serving.sh").read_text()
    command = shlex.split(script[script.index("exec docker run") :].replace("\\\n", " "))
    service = compose["services"]["tf-serving"]
    [container] = kubernetes[1]["spec"]["template"]["spec"]["containers"]
    for arguments in (
        command[command.index(SERVING_IMAGE) + 1 :],
        service["command"],
        container["args"],
    ):
        flags = _flags(arguments)
        assert {key: flags.get(key) for key in BATCHING_FLAGS} == BATCHING_FLAGS
    # The script mounts the whole deploy directory at /config; compose mounts the file;
    # the Kubernetes ConfigMap (mounted at /config) holds it.
    assert '-v "$DEPLOY_DIR:/config:ro"' in script
    assert f"./{BATCHING_FILE}:/config/{BATCHING_FILE}:ro" in service["volumes"]
    assert kubernetes[0]["data"][BATCHING_FILE] == (DEPLOY / BATCHING_FILE).read_text()


def _flags(arguments: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in arguments if arg.startswith("--"))


def test_run_script_mounts_the_serving_root(tmp_path):
    """The docker command line: the official image, ports 8500/8501, the serving root at
    /models, the config directory at /config, and the config flags."""
    script = (DEPLOY / "run_tf_serving.sh").read_text()
    subprocess.run(["bash", "-n", str(DEPLOY / "run_tf_serving.sh")], check=True)
    command = shlex.split(script[script.index("exec docker run") :].replace("\\\n", " "))
    assert command[command.index(SERVING_IMAGE) - 1].endswith(":/config:ro")
    assert '"$(realpath "$OUTPUT_ROOT")/serving:/models:ro"' in script
    assert 'OUTPUT_ROOT="${OUTPUT_ROOT:-tfx_output}"' in script
    flags = _flags(command[command.index(SERVING_IMAGE) + 1 :])
    assert flags["model_config_file"] == "/config/models.config"
    assert flags["monitoring_config_file"] == "/config/monitoring.config"
    assert (flags["port"], flags["rest_api_port"]) == ("8500", "8501")


def test_docker_compose_matches_run_script(compose):
    service = compose["services"]["tf-serving"]
    assert service["image"] == SERVING_IMAGE
    assert service["ports"] == ["8500:8500", "8501:8501"]
    assert "../../tfx_output/serving:/models:ro" in service["volumes"]
    assert "./models.config:/config/models.config:ro" in service["volumes"]
    script = (DEPLOY / "run_tf_serving.sh").read_text()
    script_flags = _flags(shlex.split(script[script.index(SERVING_IMAGE) :].replace("\\\n", " ")))
    assert _flags(service["command"]) == script_flags


def test_kubernetes_manifest(kubernetes, compose):
    """ConfigMap (equal to the files), Deployment (same image and flags, mounts), Service."""
    config_map, deployment, service = kubernetes
    assert [config_map["kind"], deployment["kind"], service["kind"]] == [
        "ConfigMap",
        "Deployment",
        "Service",
    ]
    for name in ("models.config", "monitoring.config", BATCHING_FILE):
        assert config_map["data"][name] == (DEPLOY / name).read_text()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == SERVING_IMAGE
    compose_service = compose["services"]["tf-serving"]
    assert _flags(container["args"]) == _flags(compose_service["command"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"models": "/models", "config": "/config"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert (
        deployment["spec"]["template"]["metadata"]["labels"]
        == selector
        == service["spec"]["selector"]
    )
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [8500, 8501]


def _parse_saved_model_cli(text: str) -> dict[str, dict]:
    """saved_model_cli's listing as {signature: {"inputs"/"outputs": {key: (dtype, shape)},
    "method": name}}."""
    signatures: dict[str, dict] = {}
    current: dict = {}
    side = "inputs"
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"signature_def\['([^']+)'\]:", line):
            current = signatures.setdefault(match[1], {"inputs": {}, "outputs": {}})
        elif "following input(s)" in line:
            side = "inputs"
        elif "following output(s)" in line:
            side = "outputs"
        elif match := re.match(r"(inputs|outputs)\['([^']+)'\] tensor_info:", line):
            key = match[2]
        elif match := re.match(r"dtype: (\w+)", line):
            current[side][key] = [match[1], None]
        elif match := re.match(r"shape: (.+)", line):
            current[side][key][1] = match[1]
        elif match := re.match(r"Method name is: (.*)", line):
            current["method"] = match[1]
    return {
        name: {
            "method": sig.get("method", ""),
            "inputs": {k: tuple(v) for k, v in sig["inputs"].items()},
            "outputs": {k: tuple(v) for k, v in sig["outputs"].items()},
        }
        for name, sig in signatures.items()
    }


def test_saved_model_cli_lists_what_tf_serving_needs():
    """``saved_model_cli show --all`` on the export: the serve tag-set, every signature with
    the documented input and output dtypes and shapes and the right method names."""
    cli = REPO / ".venv" / "bin" / "saved_model_cli"
    if not cli.exists():
        cli = Path("saved_model_cli")
    result = subprocess.run(
        [str(cli), "show", "--dir", str(exported_versions()[0]), "--all"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert (
        "MetaGraphDef with tag-set: 'serve' contains the following SignatureDefs:" in result.stdout
    )
    listed = _parse_saved_model_cli(result.stdout)
    predict_outputs = {
        "classes": ("DT_INT64", "(-1)"),
        "probabilities": ("DT_FLOAT", "(-1, 10)"),
        "class_names": ("DT_STRING", "(-1)"),
    }
    predict = "tensorflow/serving/predict"
    assert {name: sig for name, sig in listed.items() if name != "__saved_model_init_op"} == {
        "serving_default": {
            "method": predict,
            "inputs": {"examples": ("DT_STRING", "(-1)")},
            "outputs": predict_outputs,
        },
        "predict_images": {
            "method": predict,
            "inputs": {"images": ("DT_FLOAT", "unknown_rank")},
            "outputs": {"scores": ("DT_FLOAT", "(-1, 10)"), "classes": ("DT_INT64", "(-1)")},
        },
        "predict_pixels": {
            "method": predict,
            "inputs": {"images": ("DT_FLOAT", "unknown_rank")},
            "outputs": predict_outputs,
        },
        "predict_pixels_uint8": {
            "method": predict,
            "inputs": {"images": ("DT_UINT8", "unknown_rank")},
            "outputs": predict_outputs,
        },
        "classify": {
            "method": "tensorflow/serving/classify",
            "inputs": {"inputs": ("DT_STRING", "(-1)")},
            "outputs": {"classes": ("DT_STRING", "(-1, 10)"), "scores": ("DT_FLOAT", "(-1, 10)")},
        },
    }


def test_request_logging_deploys_with_the_embedded_server_only(compose, model_server_config):
    """request_logging.config is TF Serving's LoggingConfig (parsed strictly with its own
    proto) that the embedded server accepts; the compose service that serves with it runs
    `mnist-tfx serve` with flags our CLI parses, logging into the mounted /logs. Stock TF
    Serving refuses any logging_config, so neither its service nor models.config has one."""
    from tensorflow_serving.config import logging_config_pb2

    from cli.main import build_parser
    from serving.request_log import read_logging_config

    text = (DEPLOY / "request_logging.config").read_text()
    official = text_format.Parse(text, logging_config_pb2.LoggingConfig())
    assert official.log_collector_config.type == "tfrecord"
    assert official.log_collector_config.filename_prefix == "/logs/requests"
    assert official.sampling_config.sampling_rate == pytest.approx(0.1)
    assert read_logging_config(DEPLOY / "request_logging.config") == official

    service = compose["services"]["mnist-tfx-serve"]
    assert service["profiles"] == ["request-logs"]
    assert service["build"] == "../.." and service["command"][:2] == ["mnist-tfx", "serve"]
    args = build_parser().parse_args(service["command"][1:])
    assert args.logging_config == Path("/config/request_logging.config")
    assert args.model_config_file == Path("/config/models.config")
    assert (args.host, args.grpc_port, args.rest_port) == ("0.0.0.0", 8500, 8501)
    assert "./request_logging.config:/config/request_logging.config:ro" in service["volumes"]
    assert "../../tfx_output/request_logs:/logs" in service["volumes"]
    # The two services can run side by side.
    assert service["ports"] == ["8510:8500", "8511:8501"]

    stock = compose["services"]["tf-serving"]
    assert not any("logging" in arg for arg in stock["command"])
    assert not any(
        c.HasField("logging_config") for c in model_server_config.model_config_list.config
    )
