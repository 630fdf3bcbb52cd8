"""Starting the server with a configuration it cannot serve: a malformed
``--model-config-file`` (bad text proto, unknown field, no base_path, ...) or a port
in use is one ``error: ...`` line on stderr naming the file or port and what was
expected, and exit code 2, without a traceback. Real ``python -m serving.server``
subprocesses; ``serve()`` itself is checked for a port taken after the probe.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving.batching import BatchingConfig
from serving.server import ServerConfig, StartupError, model_configs_from_file, serve
from serving.versions import ModelConfig
from tests.serving_fixture import REPO, free_port

EXAMPLE = "expected a ModelServerConfig text proto"


def run_server(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "serving.server", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *parts: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("error: "), line
    for part in parts:
        assert part in line, line
    return line


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def listening():
    """A socket listening on a free localhost port: a port in use."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('model_config_list { config { name: "a" base_path: "/m"', 'Expected "}"'),
        (
            'model_config_list { config { name: "a" bas_path: "/m" } }',
            'Message type "tensorflow.serving.ModelConfig" has no field named "bas_path"',
        ),
        ('model_config_list { config { name: "a" } }', "model a has no base_path"),
        ('model_config_list { config { base_path: "/m" } }', "config 1 has no name"),
        ("", "model_config_list names no model"),
        (
            'model_config_list { config { name: "a" base_path: "/m" } '
            'config { name: "a" base_path: "/n" } }',
            "Illegal to list model a multiple times in config list",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" model_platform: "onnx" } }',
            'model a has model_platform "onnx"',
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" '
            "model_version_policy { specific { } } } }",
            "model a: version policy specific: list at least one version",
        ),
    ],
    ids=["syntax", "unknown-field", "no-base-path", "no-name", "no-model", "twice",
         "platform", "empty-specific-policy"],
)  # fmt: skip
def test_malformed_model_config_file_is_one_line_and_exit_2(tmp_path, text, expected):
    config = write(tmp_path / "models.config", text)
    assert_one_line_error(
        run_server("--model-config-file", str(config)),
        f"error: --model-config-file {config}: ",
        expected,
    )


def test_missing_model_config_file(tmp_path):
    missing = tmp_path / "nope.config"
    assert_one_line_error(
        run_server("--model-config-file", str(missing)),
        f"--model-config-file {missing}: cannot read it (No such file or directory)",
    )


@pytest.mark.parametrize(("api", "flag"), [("REST", "--rest-port"), ("gRPC", "--grpc-port")])
def test_port_in_use_is_one_line_and_exit_2(tmp_path, listening, api, flag):
    other = "--grpc-port" if flag == "--rest-port" else "--rest-port"
    result = run_server(
        "--model-base-path", str(tmp_path), flag, str(listening), other, str(free_port())
    )
    assert_one_line_error(
        result,
        f"cannot listen on 127.0.0.1:{listening} for {api} ({flag}): Address already in use",
        f"expected a free port on an address of this machine (stop what uses it, or choose "
        f"another with {flag})",
    )
    assert result.stdout == ""


def test_same_port_for_both_apis(tmp_path):
    port = str(free_port())
    assert_one_line_error(
        run_server("--model-base-path", str(tmp_path), "--rest-port", port, "--grpc-port", port),
        f"--rest-port and --grpc-port are both {port}; expected two ports",
    )


@pytest.mark.parametrize(("api", "flag"), [("REST", "--rest-port"), ("gRPC", "--grpc-port")])
def test_serve_raises_startup_error_for_a_port_taken_after_the_probe(
    tmp_path, listening, api, flag
):
    """serve() itself (a port taken between the probe and the bind): StartupError with
    the same text, and whatever it had started is closed again."""
    rest_port = listening if api == "REST" else free_port()
    grpc_port = listening if api == "gRPC" else free_port()
    config = ServerConfig(
        models=(ModelConfig("m", tmp_path),), rest_port=rest_port, grpc_port=grpc_port
    )
    with pytest.raises(StartupError) as failed:
        asyncio.run(serve(config, stop=asyncio.Event()))
    assert f"cannot listen on 127.0.0.1:{listening} for {api} ({flag})" in str(failed.value)
    if api == "gRPC":  # the REST port it had opened is closed again
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", rest_port))


def test_well_formed_config_file(tmp_path):
    config = write(
        tmp_path / "models.config",
        'model_config_list { config { name: "a" base_path: "/models/a" '
        'model_platform: "tensorflow" model_version_policy { latest { num_versions: 2 } } '
        'version_labels { key: "stable" value: 7 } } '
        'config { name: "b" base_path: "/models/b" } }',
    )
    [a, b] = model_configs_from_file(config)
    assert (a.name, str(a.base_path), a.policy.kind, a.policy.num_latest, a.labels) == (
        "a",
        "/models/a",
        "latest",
        2,
        {"stable": 7},
    )
    assert (b.name, b.policy.kind, b.policy.num_latest) == ("b", "latest", 1)


@pytest.mark.parametrize(
    ("intra_op", "cores", "expected"),
    [(None, 8, 7), (None, 2, 1), (None, 1, 1), (0, 8, 0), (3, 2, 3)],
)
def test_intra_op_threads_leave_a_core_to_the_event_loop(
    monkeypatch, tmp_path, intra_op, cores, expected
):
    """Unset, TensorFlow gets one intra-op thread fewer than the cores the process may
    use (at least one); 0 (TensorFlow's choice) and explicit counts are kept."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    config = ServerConfig(models=(ModelConfig("m", tmp_path),), intra_op_threads=intra_op)
    assert config.tf_intra_op_threads == expected


@pytest.mark.parametrize(
    ("batching", "model_threads", "expected"),
    [(True, None, 1), (False, None, 2), (False, 3, 3), (True, 2, 2)],
)
def test_model_threads_default_follows_the_usable_cores(
    monkeypatch, tmp_path, batching, model_threads, expected
):
    """Without batching one model thread per core the process may run on (2 of the
    machine's 8 here, as taskset or a container's cpuset would allow), with batching
    one; an explicit count is kept."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    config = ServerConfig(
        models=(ModelConfig("m", tmp_path),),
        batching=BatchingConfig(enabled=batching),
        model_threads=model_threads,
    )
    assert config.threads == expected


def started_server_line(tmp_path: Path, cpus: set[int], *args: str) -> str:
    """The "TensorFlow threads: ..." line a server started on ``cpus`` prints once
    TensorFlow has its pools (read back from TensorFlow), then the server is stopped."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--model-base-path", str(tmp_path),
         "--rest-port", str(free_port()), "--grpc-port", str(free_port()), *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )  # fmt: skip
    try:
        for line in process.stdout:
            if line.startswith("TensorFlow threads:"):
                return line.strip()
        pytest.fail(f"the server exited ({process.wait()}) without its TensorFlow line")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_server_gives_tensorflow_one_core_fewer(tmp_path):
    """On two cores TensorFlow runs each op on one thread: the event loop has the other."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        pytest.skip("needs two CPUs")
    line = started_server_line(tmp_path, set(available[:2]))
    assert line == "TensorFlow threads: intra-op 1, inter-op one per core (cores usable: 2)"


def test_explicit_tensorflow_threads_reach_tensorflow(tmp_path):
    one_cpu = {min(os.sched_getaffinity(0))}
    line = started_server_line(
        tmp_path, one_cpu, "--tf-intra-op-threads", "0", "--tf-inter-op-threads", "3"
    )
    assert line == "TensorFlow threads: intra-op one per core, inter-op 3 (cores usable: 1)"
