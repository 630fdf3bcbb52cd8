"""Full-data pipeline under each local Beam runner (`direct`, `direct-mp`, `portable`),
per component.

Runs the real `mnist-tfx run` once per runner and round, uncached, alternating the
runners (A B C C B A ...) so that drift in the machine's speed hits all alike, and
prints each Beam-running component's median wall time from ML Metadata. The
Trainer does not use Beam; it runs one epoch here to keep the rounds short.

`portable` is `--beam portable-external`: for each of its runs the bench starts the
job service (`python -m pipeline.beam_runners`) and Beam's EXTERNAL worker pool
(`apache_beam.runners.worker.worker_pool_main`) on free ports, with
`--portable-workers` SDK workers per job (default 2), and stops both afterwards;
their start-up is not in the run's wall time.

    .venv/bin/python bench/bench_beam_runners.py --dataset mnist --rounds 2
    .venv/bin/python bench/bench_beam_runners.py --source tests/fixtures/mnist --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.beam_runners import worker_pool_env  # noqa: E402

BEAM_COMPONENTS = ("ExampleGen", "StatisticsGen", "Transform", "Evaluator")
RUNNERS = ("direct", "direct-mp", "portable")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"exited {proc.returncode} before listening on {port}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.5)
    sys.exit(f"nothing listening on {port} after 120 s:\n{log.read_text()}")


@contextlib.contextmanager
def portable_services(root: Path, workers: int) -> Iterator[list[str]]:
    """The job service and the worker pool, each in its own process group; yields the
    `mnist-tfx run` flags that point the run at them. Stopped with SIGINT (the pool
    then stops its workers), and SIGKILL for anything left in either group after 30 s."""
    env = worker_pool_env()
    job_port, pool_port = _free_port(), _free_port()
    commands = {
        "job_service": [sys.executable, "-m", "pipeline.beam_runners", "--port", str(job_port)],
        "worker_pool": [
            sys.executable,
            "-m",
            "apache_beam.runners.worker.worker_pool_main",
            "--service_port",
            str(pool_port),
        ],
    }
    procs: list[subprocess.Popen] = []
    try:
        for (name, command), port in zip(commands.items(), (job_port, pool_port), strict=True):
            log = root / f"{name}.log"
            proc = subprocess.Popen(
                command,
                cwd=Path(__file__).resolve().parents[1],
                env=env,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            procs.append(proc)
            _wait_for_port(port, proc, log)
        yield [
            f"--beam-arg=--job_endpoint=localhost:{job_port}",
            f"--beam-arg=--environment_config=localhost:{pool_port}",
            f"--beam-arg=--sdk_worker_parallelism={workers}",
        ]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_once(runner: str, args: argparse.Namespace, index: int) -> dict[str, float]:
    root = args.output_root / f"{runner}-{index}"
    root.mkdir(parents=True, exist_ok=True)
    if runner != "portable":
        return _run(runner, [], args, root)
    with portable_services(root, args.portable_workers) as beam_args:
        return _run("portable-external", beam_args, args, root)


def _run(beam: str, beam_args: list[str], args: argparse.Namespace, root: Path) -> dict[str, float]:
    summary_path = root / "summary.json"
    # With --source each run converts into its own data dir: a fixture never becomes
    # a span of the real data, and every run reads span 0.
    data_dir = root / "data" if args.source else args.data_dir
    source = ["--source", str(args.source)] if args.source else []
    command = [
        sys.executable,
        "-m",
        "cli",
        "run",
        "--dataset",
        args.dataset,
        "--data-dir",
        str(data_dir),
        "--output-root",
        str(root),
        *source,
        "--beam",
        beam,
        *beam_args,
        "--epochs",
        "1",
        # One epoch may not reach the release floors; the push is not what is measured.
        "--min-accuracy",
        "0",
        "--min-class-accuracy",
        "0",
        "--no-cache",
        "--summary-json",
        str(summary_path),
    ]
    started = time.perf_counter()
    proc = subprocess.run(
        command, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{beam}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    summary = json.loads(summary_path.read_text())
    times = {c["name"]: c["seconds"] for c in summary["components"]}
    times["wall"] = wall
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--output-root", type=Path, default=Path("bench_output/beam_runners"))
    parser.add_argument(
        "--source",
        type=Path,
        help="IDX files each run converts into its own data dir, instead of --data-dir "
        "(a dry run: --source tests/fixtures/mnist)",
    )
    parser.add_argument("--runners", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    parser.add_argument("--portable-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {runner: [] for runner in args.runners}
    order: list[str] = []
    for round_index in range(args.rounds):
        runners = args.runners if round_index % 2 == 0 else list(reversed(args.runners))
        order.extend(runners)
        for runner in runners:
            times = run_once(runner, args, round_index)
            results[runner].append(times)
            print(
                f"round {round_index + 1} {runner}: "
                + ", ".join(
                    f"{name} {times.get(name, 0):.1f}" for name in (*BEAM_COMPONENTS, "wall")
                ),
                flush=True,
            )

    load = os.getloadavg()
    print(
        f"\n{args.dataset}{f' from {args.source}' if args.source else ''}, "
        f"{args.rounds} round(s) per runner ({' '.join(order)}), "
        f"uncached, Trainer 1 epoch; medians in seconds; load {load[0]:.2f} after"
    )
    header = f"{'component':<16}" + "".join(f"{runner:>12}" for runner in args.runners)
    print(header)
    rows = {}
    for name in (*BEAM_COMPONENTS, "Beam total", "wall"):
        row = []
        for runner in args.runners:
            if name == "Beam total":
                values = [sum(t.get(c, 0.0) for c in BEAM_COMPONENTS) for t in results[runner]]
            else:
                values = [t.get(name, 0.0) for t in results[runner]]
            row.append(statistics.median(values))
        rows[name] = row
        print(f"{name:<16}" + "".join(f"{value:>12.1f}" for value in row))
    totals = dict(zip(args.runners, rows["Beam total"], strict=True))
    fastest = min(totals, key=totals.get)
    print(f"faster for the Beam components: {fastest}")


if __name__ == "__main__":
    main()
