"""Benchmark on the full dataset: the whole pipeline from scratch (no cache), its
per-component wall seconds read from ML Metadata, and the Trainer's throughput next
to a bare tf_keras ``fit`` of the same network on the same images held in memory
as numpy arrays, timed in the same process: the Trainer component's own figure
from the pipeline run, and epochs of the Trainer's code path and of the bare fit
interleaved (medians), which is the comparison that machine-speed drift cannot
skew. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_pipeline.py --dataset mnist
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _bare_model(seed: int):
    """The same layers as cnn_model_fn as a plain tf_keras Sequential."""
    import tf_keras as keras

    from trainer.train import set_seed

    set_seed(seed)
    model = keras.Sequential(
        [
            keras.layers.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2, 2),
            keras.layers.Conv2D(64, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2, 2),
            keras.layers.Flatten(),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dropout(0.4),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def bare_epoch(x, y, batch_size: int, seed: int) -> float:
    """One epoch of a bare ``fit`` on numpy arrays; steady-state images/second."""
    from trainer.train import ThroughputCallback

    model = _bare_model(seed)
    throughput = ThroughputCallback(batch_size)
    model.fit(x, y, batch_size=batch_size, epochs=1, callbacks=[throughput], verbose=0)
    assert model.count_params() == 3_274_634
    return throughput.images_per_second


def trainer_epoch(train_files: list[str], tft_output, hparams) -> float:
    """One epoch through the Trainer's own code path (trainer.train: Transform
    graph, in-memory arrays, cnn_model_fn on ModelFnModel, same callbacks);
    steady-state images/second. Loading the arrays is outside the timing, as
    it is in the Trainer's figure."""
    from trainer.train import train

    _, stats = train(hparams, train_files, [train_files[0]], tft_output)
    return stats.images_per_second


def interleaved_comparison(output_root: Path, dataset: str, data_dir: Path, rounds: int) -> dict:
    """Alternates one Trainer-path epoch and one bare-fit epoch, ``rounds`` times in
    each order (ABBA...), so drift in the machine's speed hits both alike; reports
    the medians."""
    import dataclasses
    import statistics

    import tensorflow_transform as tft

    from ingest.idx import read_idx_pair
    from trainer.hparams import HParams

    artifacts = output_root / f"{dataset}_cnn" / "artifacts"
    transform_graph = max((artifacts / "Transform" / "transform_graph").iterdir())
    examples = max((artifacts / "ExampleGen" / "examples").iterdir())
    train_files = sorted(str(p) for p in (examples / "Split-train").iterdir())
    tft_output = tft.TFTransformOutput(str(transform_graph))
    hparams = dataclasses.replace(HParams(), epochs=1, validate_every_epoch=False)

    raw = data_dir / "raw" / dataset
    images, labels = read_idx_pair(
        *sorted(raw.glob("train-images*")), *sorted(raw.glob("train-labels*"))
    )
    x = (images.astype("float32") / 255.0).reshape(-1, 28, 28, 1)
    y = labels.astype("int64")

    trainer_runs: list[float] = []
    bare_runs: list[float] = []
    for round_index in range(rounds):
        order = ("trainer", "bare") if round_index % 2 == 0 else ("bare", "trainer")
        for which in order:
            if which == "trainer":
                trainer_runs.append(trainer_epoch(train_files, tft_output, hparams))
            else:
                bare_runs.append(bare_epoch(x, y, hparams.batch_size, hparams.seed or 0))
            latest = (trainer_runs if which == "trainer" else bare_runs)[-1]
            print(f"  round {round_index + 1} {which:<7} {latest:8,.0f} images/s", flush=True)
    trainer_median = statistics.median(trainer_runs)
    bare_median = statistics.median(bare_runs)
    return {
        "rounds": rounds,
        "trainer_images_per_second": [round(v, 1) for v in trainer_runs],
        "bare_images_per_second": [round(v, 1) for v in bare_runs],
        "trainer_median": round(trainer_median, 1),
        "bare_median": round(bare_median, 1),
        "ratio_of_medians": round(trainer_median / bare_median, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--output-root", type=Path, default=Path("bench_output"))
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="epochs of each of the Trainer path and the bare fit, interleaved",
    )
    parser.add_argument("--beam", default="direct", help="Beam runner (mnist-tfx run --beam)")
    parser.add_argument("--beam-arg", action="append", default=[])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from cli.main import main as cli_main
    from pipeline.beam_runners import beam_pipeline_args
    from pipeline.run_summary import summarize_run

    shutil.rmtree(args.output_root, ignore_errors=True)
    start = time.perf_counter()
    cli_args = [
        "run",
        "--dataset",
        args.dataset,
        "--data-dir",
        str(args.data_dir),
        "--output-root",
        str(args.output_root),
        "--no-cache",
    ]
    cli_args.append(f"--beam={args.beam}")
    for beam_arg in args.beam_arg:
        cli_args.append(f"--beam-arg={beam_arg}")
    code = cli_main(cli_args)
    wall = time.perf_counter() - start
    summary = summarize_run(
        str(args.output_root / f"{args.dataset}_cnn" / "metadata.sqlite"), f"{args.dataset}_cnn"
    )
    print("\nTrainer path vs bare fit, one epoch each, interleaved:", flush=True)
    comparison = interleaved_comparison(args.output_root, args.dataset, args.data_dir, args.rounds)

    components = {c.name: c.seconds for c in summary.components}
    non_trainer = sum(s for name, s in components.items() if name != "Trainer")
    trainer_ips = summary.training["images_per_second"] if summary.training else 0.0
    figures = {
        "dataset": args.dataset,
        "exit_code": code,
        "accuracy": summary.accuracy,
        "pipeline_wall_seconds": round(wall, 1),
        "component_seconds": components,
        "non_trainer_seconds": round(non_trainer, 1),
        "trainer_images_per_second": trainer_ips,
        "interleaved": comparison,
        "throughput_ratio": comparison["ratio_of_medians"],
        "pipeline_trainer_vs_bare_median": round(trainer_ips / comparison["bare_median"], 3),
        "beam_args": beam_pipeline_args(args.beam, args.beam_arg),
    }
    print("\n=== bench_pipeline ===")
    print(f"Beam: {' '.join(figures['beam_args'])}")
    print(
        f"dataset {args.dataset}: test accuracy {summary.accuracy:.4f}, pipeline wall {wall:.1f} s"
    )
    for name, seconds in components.items():
        print(f"  {name:<18} {seconds:6.1f} s")
    print(f"  components other than Trainer: {non_trainer:.1f} s")
    print(f"Trainer component in the pipeline (steady state): {trainer_ips:,.0f} images/s")
    print(
        f"interleaved, median of {args.rounds} epochs each: Trainer path "
        f"{comparison['trainer_median']:,.0f} images/s, bare tf_keras fit on numpy "
        f"{comparison['bare_median']:,.0f} images/s"
    )
    print(f"ratio Trainer path / bare fit (medians): {comparison['ratio_of_medians']}")
    print(
        "ratio Trainer component in the pipeline / bare fit median: "
        f"{figures['pipeline_trainer_vs_bare_median']}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
