"""Benchmark on the full dataset: the whole pipeline from scratch (no cache), its
per-component wall seconds read from ML Metadata, and the Trainer's throughput next
to a bare tf_keras ``fit`` of the same network on the same images held in memory
as numpy arrays, timed in the same process. Prints figures; asserts nothing.

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


def bare_fit(dataset: str, data_dir: Path, epochs: int, batch_size: int, seed: int) -> dict:
    """The same layers as cnn_model_fn as a plain Sequential, fit on numpy arrays."""
    import tf_keras as keras

    from components.idx import read_idx_pair
    from trainer.train import ThroughputCallback, set_seed

    raw = data_dir / "raw" / dataset
    images, labels = read_idx_pair(
        *sorted(raw.glob("train-images*")), *sorted(raw.glob("train-labels*"))
    )
    x = (images.astype("float32") / 255.0).reshape(-1, 28, 28, 1)
    y = labels.astype("int64")
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
    throughput = ThroughputCallback(batch_size)
    start = time.perf_counter()
    model.fit(
        x, y, batch_size=batch_size, epochs=epochs, callbacks=[throughput], verbose=2, shuffle=True
    )
    return {
        "epochs": epochs,
        "fit_seconds": round(time.perf_counter() - start, 1),
        "images_per_second": round(throughput.images_per_second, 1),
        "params": model.count_params(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--output-root", type=Path, default=Path("bench_output"))
    parser.add_argument("--bare-epochs", type=int, default=2)
    parser.add_argument("--beam-arg", action="append", default=None)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from pipeline.cli import main as cli_main
    from pipeline.config import DEFAULT_BEAM_ARGS
    from pipeline.run_summary import summarize_run
    from trainer.hparams import HParams

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
    for beam_arg in args.beam_arg or DEFAULT_BEAM_ARGS:
        cli_args.append(f"--beam-arg={beam_arg}")
    code = cli_main(cli_args)
    wall = time.perf_counter() - start
    summary = summarize_run(
        str(args.output_root / f"{args.dataset}_cnn" / "metadata.sqlite"), f"{args.dataset}_cnn"
    )
    hparams = HParams()
    bare = bare_fit(
        args.dataset, args.data_dir, args.bare_epochs, hparams.batch_size, hparams.seed or 0
    )

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
        "bare_fit": bare,
        "throughput_ratio": round(trainer_ips / bare["images_per_second"], 3)
        if bare["images_per_second"]
        else None,
        "beam_args": list(args.beam_arg or DEFAULT_BEAM_ARGS),
    }
    print("\n=== bench_pipeline ===")
    print(
        f"dataset {args.dataset}: eval accuracy {summary.accuracy:.4f}, pipeline wall {wall:.1f} s"
    )
    for name, seconds in components.items():
        print(f"  {name:<18} {seconds:6.1f} s")
    print(f"  components other than Trainer: {non_trainer:.1f} s")
    print(f"Trainer throughput (steady state): {trainer_ips:,.0f} images/s")
    print(
        f"bare tf_keras fit on numpy ({bare['epochs']} epochs): "
        f"{bare['images_per_second']:,.0f} images/s"
    )
    print(f"ratio Trainer / bare fit: {figures['throughput_ratio']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
