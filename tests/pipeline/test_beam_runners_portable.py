"""``--beam portable-external`` for real: Beam's portability layer (the one Flink, Spark
and Dataflow run on) with a job service and an EXTERNAL worker pool of two worker
processes, both started and stopped here (pipeline/beam_runners.py).

The job service is Beam's ``LocalJobServicer`` as ``python -m pipeline.beam_runners``
serves it (each stage on ``--sdk_worker_parallelism`` workers); the pool is Beam's own
``apache_beam.runners.worker.worker_pool_main``, unchanged, started in the environment
``worker_pool_env`` gives. The e2e test runs the whole pipeline on the fixture through
them and checks that statistics, schema and evaluation equal the direct runner's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.beam_runners import beam_pipeline_args, worker_count, worker_pool_env

PROJECT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port the kernel says is free now (bound to 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before listening:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.5)
    raise AssertionError(f"nothing listening on {port} after {seconds} s:\n{log.read_text()}")


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, process group, CPU seconds) of a running process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in "ZX":  # exited; a zombie only waits for its parent to reap it
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / ticks


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def _processes() -> dict[int, tuple[int, int, float]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


@dataclass
class Services:
    job_port: int
    pool_port: int
    job_log: Path
    pool_log: Path
    pool: subprocess.Popen | None = None
    # worker pid -> the most CPU seconds seen; and the largest number alive at once.
    worker_cpu: dict[int, float] = field(default_factory=dict)
    most_alive: int = 0
    leftover: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)

    def beam_args(self, workers: int = 2) -> list[str]:
        return [
            f"--beam-arg=--job_endpoint=localhost:{self.job_port}",
            f"--beam-arg=--environment_config=localhost:{self.pool_port}",
            f"--beam-arg=--sdk_worker_parallelism={workers}",
        ]

    def watch(self, stop: threading.Event) -> None:
        while not stop.is_set():
            workers = {p: s for p, s in _processes().items() if s[0] == self.pool.pid}
            self.most_alive = max(self.most_alive, len(workers))
            for pid, (_, _, cpu) in workers.items():
                self.worker_cpu[pid] = max(self.worker_cpu.get(pid, 0.0), cpu)
            stop.wait(0.5)


@contextlib.contextmanager
def portable_services(tmp_path: Path):
    """The job service and the worker pool on free ports, each in its own process
    group; a thread notes the pool's worker processes and their CPU time. On the way
    out (also when the test failed) both get SIGINT, so the pool stops its workers
    itself; whatever is still alive in either group after 30 s gets SIGKILL (listed in
    ``killed``), and whatever survives even that is listed in ``leftover``."""
    env = worker_pool_env()
    job_log = tmp_path / "job_service.log"
    services = Services(free_port(), free_port(), job_log, tmp_path / "worker_pool.log")
    started: list[subprocess.Popen] = []
    stop = threading.Event()
    try:
        job_service = subprocess.Popen(
            [sys.executable, "-m", "pipeline.beam_runners", "--port", str(services.job_port)],
            cwd=PROJECT,
            env=env,
            stdout=job_log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(job_service)
        services.pool = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.worker.worker_pool_main",
                "--service_port",
                str(services.pool_port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=services.pool_log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(services.pool)
        wait_for_port(services.job_port, job_service, job_log)
        wait_for_port(services.pool_port, services.pool, services.pool_log)
        threading.Thread(target=services.watch, args=(stop,), daemon=True).start()
        yield services
    finally:
        stop.set()
        groups = {proc.pid for proc in started}
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(s[1] in groups for s in _processes().values()):
            for proc in started:
                proc.poll()
            time.sleep(0.5)
        services.killed = [
            f"{pid} {_cmdline(pid)}" for pid, s in _processes().items() if s[1] in groups
        ]
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        for proc in started:
            proc.wait(10)
        # Under load a service can take more than 30 s to act on SIGINT (it then gets
        # SIGKILL, noted in ``killed``); what must hold is that nothing survives.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(s[1] in groups for s in _processes().values()):
            time.sleep(0.2)
        services.leftover = [
            f"{pid} {_cmdline(pid)}" for pid, s in _processes().items() if s[1] in groups
        ]


def test_portable_external_arguments_and_pool_environment():
    assert beam_pipeline_args("portable-external", ["--environment_config=localhost:5"]) == [
        "--runner=PortableRunner",
        "--job_endpoint=localhost:8099",
        "--environment_type=EXTERNAL",
        "--environment_config=localhost:5",
    ]
    env = worker_pool_env({"PATH": "/usr/bin:/bin"})
    # The pool runs `python` from PATH: it must be this interpreter's.
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert env["PATH"].endswith("/usr/bin:/bin")
    assert env["TF_USE_LEGACY_KERAS"] == "1"
    assert worker_pool_env({"TF_USE_LEGACY_KERAS": "0"})["TF_USE_LEGACY_KERAS"] == "0"


def test_worker_count_reads_the_option_as_it_travels():
    assert worker_count(2) == 2
    assert worker_count("2") == 2
    assert worker_count(2.0) == 2
    assert worker_count(0) == (os.cpu_count() or 1)
    for bad in ("two", "1.5", -1, "inf"):
        with pytest.raises(ValueError, match=r"--sdk_worker_parallelism .*expected a whole"):
            worker_count(bad)


@pytest.mark.slow
def test_two_external_workers_each_process_part_of_a_stage(tmp_path):
    """A small Beam pipeline through the job service and the pool: each element records
    the pid of the worker process that handled it, so both workers are seen working
    on the same stage."""
    script = tmp_path / "job.py"
    out = tmp_path / "pids.txt"
    script.write_text(
        "import os, sys\n"
        "import apache_beam as beam\n"
        "from apache_beam.options.pipeline_options import PipelineOptions\n"
        "from pipeline.beam_runners import beam_pipeline_args\n"
        "args = [a.split('=', 1)[1] for a in sys.argv[2:]]\n"
        "opts = PipelineOptions(beam_pipeline_args('portable-external', args))\n"
        "with beam.Pipeline(options=opts) as p:\n"
        "    (p | beam.Create(range(200))\n"
        "       | 'pid' >> beam.Map(lambda x: (x % 10, os.getpid()))\n"
        "       | beam.GroupByKey()\n"
        "       | 'write' >> beam.Map(lambda kv, path=sys.argv[1]: open(path, 'a').write(\n"
        "            ' '.join(map(str, sorted(set(kv[1])))) + '\\n')))\n"
    )
    with portable_services(tmp_path) as services:
        proc = subprocess.run(
            [sys.executable, str(script), str(out), *services.beam_args(2)],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        workers = set(services.worker_cpu)
    assert services.leftover == []
    rows = [set(map(int, line.split())) for line in out.read_text().splitlines()]
    assert len(rows) == 10
    seen = set().union(*rows)
    # Both pids are the pool's worker processes, and both handled elements of the stage.
    assert len(seen) == 2 and seen <= workers, (seen, workers)
    assert services.pool_log.read_text().count("Starting worker with command") == 2


def _feature_numbers(stats_path: Path) -> dict[str, object]:
    """Every number of a split's statistics by path (feature, statistic, bucket)."""
    from google.protobuf import json_format
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(stats_path.read_bytes())
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}", item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)
        else:
            flat[prefix] = value

    for dataset in stats.datasets:
        for feature in dataset.features:
            name = ".".join(feature.path.step) or feature.name
            walk(f"{name}", json_format.MessageToDict(feature))
        flat["num_examples"] = dataset.num_examples
    return flat


def _artifacts(out: Path) -> dict[str, object]:
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    (schema_path,) = sorted(out.rglob("SchemaGen/schema/*/schema.pbtxt"))
    schema = text_format.Parse(schema_path.read_text(), schema_pb2.Schema())
    stats = {
        path.parent.name: _feature_numbers(path)
        for path in sorted(out.rglob("StatisticsGen/statistics/*/Split-*/FeatureStats.pb"))
    }
    return {"schema": schema, "statistics": stats}


@pytest.mark.e2e
@pytest.mark.slow
def test_portable_runner_with_external_workers_matches_the_direct_runner(tmp_path):
    """The fixture through every component twice: with ``direct``, then with
    ``portable-external`` against the job service and a pool of two worker processes.
    The schema protos are equal, every statistic of every feature and split is equal,
    and so are the evaluation's accuracy overall and per class."""
    from tests.pipeline_fixture import fail_text, pipeline_args, run_cli

    runs = {}
    for runner in ("direct", "portable"):
        root = tmp_path / runner
        root.mkdir()
        summary = root / "summary.json"
        args = [*pipeline_args("mnist", root, "--summary-json", str(summary))]
        if runner == "direct":
            proc = run_cli(*args, "--beam", "direct", cwd=root)
            assert proc.returncode == 0, fail_text(proc)
        else:
            with portable_services(root) as services:
                proc = run_cli(
                    *args, "--beam", "portable-external", *services.beam_args(2), cwd=root
                )
                assert proc.returncode == 0, fail_text(proc) + services.pool_log.read_text()
            assert services.leftover == [], f"processes left running: {services.leftover}"
        runs[runner] = {"summary": json.loads(summary.read_text()), **_artifacts(root / "out")}

    # Every Beam job went through the job service and got two workers from the pool;
    # two were alive at once and each spent CPU time. ExampleGen, StatisticsGen and the
    # Evaluator run Beam jobs; the Transform does not (its preprocessing_fn has no
    # analyzers and materialize is off), nor do the other components.
    jobs = services.job_log.read_text().count("with state DONE")
    starts = services.pool_log.read_text().count("Starting worker with command")
    busy = sorted(cpu for cpu in services.worker_cpu.values() if cpu >= 1.0)
    assert jobs >= 3 and starts == 2 * jobs, (jobs, starts)
    print(f"Beam jobs {jobs}, workers started {starts}, at most {services.most_alive} alive")
    print(f"CPU seconds of each worker: {sorted(services.worker_cpu.values())}")
    assert services.most_alive >= 2 and len(busy) >= 2, (services.worker_cpu, starts)

    direct, portable = runs["direct"], runs["portable"]
    for run in (direct, portable):
        assert {c["state"] for c in run["summary"]["components"]} == {"COMPLETE"}
        assert run["summary"]["example_counts"] == {"train": 275, "validation": 25, "test": 200}
    assert portable["schema"] == direct["schema"]
    assert sorted(direct["statistics"]) == ["Split-test", "Split-train", "Split-validation"]
    assert sorted(portable["statistics"]) == sorted(direct["statistics"])
    for split, numbers in direct["statistics"].items():
        assert portable["statistics"][split].keys() == numbers.keys(), split
        for key, value in numbers.items():
            other = portable["statistics"][split][key]
            if isinstance(value, float):
                assert other == pytest.approx(value, rel=1e-9, abs=1e-12), (split, key)
            else:
                assert other == value, (split, key)
    assert portable["summary"]["accuracy"] == pytest.approx(direct["summary"]["accuracy"])
    assert portable["summary"]["per_class_accuracy"] == pytest.approx(
        direct["summary"]["per_class_accuracy"]
    )
    assert portable["summary"]["per_class_count"] == direct["summary"]["per_class_count"]
