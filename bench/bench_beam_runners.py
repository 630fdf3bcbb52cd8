"""Full-data pipeline under each local Beam runner (`direct`, `direct-mp`), per component.

Runs the real `mnist-tfx run` once per runner and round, uncached, alternating the
runners (A B B A ...) so that drift in the machine's speed hits both alike, and
prints each Beam-running component's median wall time from ML Metadata. The
Trainer does not use Beam; it runs one epoch here to keep the rounds short.

    .venv/bin/python bench/bench_beam_runners.py --dataset mnist --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BEAM_COMPONENTS = ("ExampleGen", "StatisticsGen", "Transform", "Evaluator")


def run_once(runner: str, args: argparse.Namespace, index: int) -> dict[str, float]:
    root = args.output_root / f"{runner}-{index}"
    summary_path = root / "summary.json"
    root.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "cli",
        "run",
        "--dataset",
        args.dataset,
        "--data-dir",
        str(args.data_dir),
        "--output-root",
        str(root),
        "--beam",
        runner,
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
        sys.exit(f"{runner}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    summary = json.loads(summary_path.read_text())
    times = {c["name"]: c["seconds"] for c in summary["components"]}
    times["wall"] = wall
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--output-root", type=Path, default=Path("bench_output/beam_runners"))
    parser.add_argument("--runners", nargs="+", default=["direct", "direct-mp"])
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
        f"\n{args.dataset}, {args.rounds} round(s) per runner ({' '.join(order)}), "
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
