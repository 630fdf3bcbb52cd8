"""The production files in ``serving/deploy/`` and what real TF Serving needs from the
export: the configs parse (``models.config`` with the official ModelServerConfig
proto, the YAML files with PyYAML), name the models and paths the pipeline pushes
to, agree with each other, and ``saved_model_cli show --all`` lists the signatures
with the dtypes and shapes TF Serving will see.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from test_serving_models import REPO, exported_versions

from pipeline.config import RunConfig
from serving.server import model_configs_from_file

DEPLOY = REPO / "serving" / "deploy"
CONTAINER_MODELS = Path("/models")
SERVING_IMAGE = "tensorflow/serving:2.16.1"
DATASETS = ("mnist", "fashion_mnist")


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
    [service] = compose["services"].values()
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
    for name in ("models.config", "monitoring.config"):
        assert config_map["data"][name] == (DEPLOY / name).read_text()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == SERVING_IMAGE
    [compose_service] = compose["services"].values()
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
            "outputs": predict_outputs,
        },
        "predict_images_uint8": {
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
