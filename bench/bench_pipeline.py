"""Benchmark on the full dataset: the whole pipeline from scratch (no cache), its
per-component wall seconds read from ML Metadata, and the Trainer's throughput next
to a bare tf_keras ``fit`` of the same network on the same images held in memory
as numpy arrays, timed in the same process: the Trainer component's own figure
from the pipeline run, and epochs of the Trainer's code path and of the bare fit
interleaved (medians), which is the comparison that machine-speed drift cannot
skew. The Trainer's code path runs once per precision (``--precisions``: fp32 and,
where the CPU has bfloat16 instructions, bf16 under ``mixed_bfloat16``), and each
epoch's model is scored on the validation split, so images/s and the accuracy an
epoch reaches are printed side by side. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_pipeline.py --dataset mnist
    .venv/bin/python bench/bench_pipeline.py --precisions fp32,bf16 --steps 50  # bf16 emulated
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


def _accuracy(predict, x, y) -> float:
    """Share of ``y`` that ``predict`` (numpy batch -> class ids) gets right, 1,000 at a time."""
    correct = 0
    for start in range(0, len(y), 1000):
        correct += int((predict(x[start : start + 1000]) == y[start : start + 1000]).sum())
    return correct / len(y)


def bare_epoch(x, y, val_x, val_y, batch_size: int, seed: int, steps: int) -> tuple[float, float]:
    """One epoch (or ``steps`` steps) of a bare ``fit`` on numpy arrays, float32:
    (steady-state images/second, validation accuracy)."""
    import numpy as np

    from trainer.train import ThroughputCallback

    model = _bare_model(seed)
    throughput = ThroughputCallback(batch_size)
    if steps:
        x, y = x[: steps * batch_size], y[: steps * batch_size]
    model.fit(x, y, batch_size=batch_size, epochs=1, callbacks=[throughput], verbose=0)
    assert model.count_params() == 3_274_634
    accuracy = _accuracy(
        lambda batch: np.argmax(model(batch, training=False).numpy(), axis=1), val_x, val_y
    )
    return throughput.images_per_second, accuracy


def trainer_epoch(
    train_files: list[str], validation_files: list[str], tft_output, hparams, val_x, val_y
) -> tuple[float, float]:
    """One epoch through the Trainer's own code path (trainer.train: Transform
    graph, cached dataset, cnn_model_fn on ModelFnModel, the precision policy, same
    callbacks): (steady-state images/second, validation accuracy of the float32
    model it returns). The first pass's Transform is in the first batch, which the
    throughput leaves out, as in the Trainer's figure."""
    import numpy as np

    from trainer.train import train

    model, stats = train(hparams, train_files, validation_files, tft_output)
    accuracy = _accuracy(
        lambda batch: np.argmax(model({"image": batch}, training=False)["probabilities"], axis=1),
        val_x,
        val_y,
    )
    return stats.images_per_second, accuracy


def default_precisions() -> str:
    """fp32 and bf16 where the CPU has bfloat16 instructions; fp32 alone elsewhere,
    where bf16 is emulated at a small fraction of the speed."""
    from trainer.train import cpu_has_bf16

    return "fp32,bf16" if cpu_has_bf16() else "fp32"


def interleaved_comparison(
    output_root: Path,
    dataset: str,
    data_dir: Path,
    rounds: int,
    precisions: list[str],
    steps: int = 0,
) -> dict:
    """Alternates one Trainer-path epoch per precision and one bare-fit epoch,
    ``rounds`` times, the order reversed every other round (ABC CBA ...), so drift in
    the machine's speed hits all alike; reports each one's runs and medians of
    images/s and validation accuracy."""
    import dataclasses
    import statistics

    import numpy as np
    import tensorflow_transform as tft

    from ingest.convert import hold_out_validation
    from ingest.idx import read_idx_pair
    from trainer.hparams import hparams_for_model

    artifacts = output_root / f"{dataset}_cnn" / "artifacts"
    transform_graph = max((artifacts / "Transform" / "transform_graph").iterdir())
    examples = max((artifacts / "ExampleGen" / "examples").iterdir())
    train_files = sorted(str(p) for p in (examples / "Split-train").iterdir())
    validation_files = sorted(str(p) for p in (examples / "Split-validation").iterdir())
    tft_output = tft.TFTransformOutput(str(transform_graph))
    base = dataclasses.replace(
        hparams_for_model("cnn_model_fn", dataset=dataset),
        epochs=1,
        max_steps=steps,
        validate_every_epoch=False,
    )

    raw = data_dir / "raw" / dataset
    images, labels = read_idx_pair(
        *sorted(raw.glob("train-images*")), *sorted(raw.glob("train-labels*"))
    )
    (train_x, train_y), (val_x, val_y), _ = hold_out_validation(images, labels)
    x = (train_x.astype("float32") / 255.0).reshape(-1, 28, 28, 1)
    y = train_y.astype("int64")
    vx = (val_x.astype("float32") / 255.0).reshape(-1, 28, 28, 1)
    vy = np.asarray(val_y, dtype="int64")

    names = [f"trainer-{p}" for p in precisions] + ["bare-fp32"]
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else list(reversed(names))
        for which in order:
            if which == "bare-fp32":
                result = bare_epoch(x, y, vx, vy, base.batch_size, base.seed or 0, steps)
            else:
                hparams = dataclasses.replace(base, precision=which.split("-")[1])
                result = trainer_epoch(train_files, validation_files, tft_output, hparams, vx, vy)
            runs[which].append(result)
            print(
                f"  round {round_index + 1} {which:<14} {result[0]:8,.0f} images/s  "
                f"validation accuracy {result[1]:.4f}",
                flush=True,
            )
    medians = {
        name: {
            "images_per_second": round(statistics.median(r[0] for r in values), 1),
            "validation_accuracy": round(statistics.median(r[1] for r in values), 4),
        }
        for name, values in runs.items()
    }
    # The first Trainer-path precision (fp32 unless --precisions says otherwise).
    trainer_median = medians[names[0]]["images_per_second"]
    bare_median = medians["bare-fp32"]["images_per_second"]
    return {
        "rounds": rounds,
        "steps": steps,
        "runs": {name: [[round(a, 1), round(b, 4)] for a, b in v] for name, v in runs.items()},
        "medians": medians,
        "trainer_median": trainer_median,
        "bare_median": bare_median,
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
    parser.add_argument(
        "--precisions",
        default=None,
        help="Trainer-path precisions to interleave, e.g. fp32,bf16 (default: fp32, "
        "and bf16 too where the CPU has bfloat16 instructions)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="cap each interleaved epoch at this many steps (0: whole epochs)",
    )
    parser.add_argument("--beam", default="direct", help="Beam runner (mnist-tfx run --beam)")
    parser.add_argument("--beam-arg", action="append", default=[])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--reuse-run",
        action="store_true",
        help="do not run the pipeline: read the run already in --output-root (its wall "
        "time is then not measured) and go straight to the interleaved epochs",
    )
    args = parser.parse_args()
    precisions = [p.strip() for p in (args.precisions or default_precisions()).split(",")]
    for precision in precisions:
        if precision not in ("fp32", "bf16"):
            parser.error(f"--precisions: expected fp32 and/or bf16, got {precision!r}")

    from cli.main import main as cli_main
    from pipeline.beam_runners import beam_pipeline_args
    from pipeline.run_summary import summarize_run

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
    if args.reuse_run:
        code, wall = None, 0.0
    else:
        shutil.rmtree(args.output_root, ignore_errors=True)
        code = cli_main(cli_args)
        wall = time.perf_counter() - start
    summary = summarize_run(
        str(args.output_root / f"{args.dataset}_cnn" / "metadata.sqlite"), f"{args.dataset}_cnn"
    )
    print(
        f"\nTrainer path ({', '.join(precisions)}) vs bare fit, one epoch each, interleaved:",
        flush=True,
    )
    comparison = interleaved_comparison(
        args.output_root, args.dataset, args.data_dir, args.rounds, precisions, args.steps
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
    print(f"interleaved, median of {args.rounds} epochs each (validation accuracy):")
    for name, median in comparison["medians"].items():
        print(
            f"  {name:<14} {median['images_per_second']:8,.0f} images/s  "
            f"{median['validation_accuracy']:.4f}"
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
