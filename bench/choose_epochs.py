"""Choose the default number of epochs on the validation split, never on the test set.

For each candidate epoch count the Trainer's own code path (``trainer.train.fit`` on
the model_fn model, the dataset's default hyperparameters with only ``epochs``
changed, so the learning-rate schedule spans the whole run as it would in the
pipeline) trains on the ``train`` split and is scored on the ``validation`` split,
both cut from the official training file exactly as a span is (the same
stratified, seeded hold-out). The official test file is not read.

The rule: the fewest epochs whose validation accuracy is within one standard
error (sqrt(p(1-p)/n)) of the best candidate's, since a difference smaller than
that is noise on n validation images. Prints a table; asserts nothing.

With several seeds per setting (the same seeds for every setting, ``seed=`` in each
``--candidate``), the seeds pair the runs instead: per setting the mean accuracy;
against the setting with the best mean, the per-seed differences, their mean and
standard error (sample standard deviation / sqrt(seeds)). A setting is as good as
the best unless it loses by more than two standard errors of that paired
difference; the fewest epochs among those are chosen. Pairing removes what two
settings share on one seed (the same start and batch order, the same hard images),
so it sees a small difference that holds on every seed, which one run per setting
cannot tell from noise.

    .venv/bin/python bench/choose_epochs.py --dataset fashion_mnist --epochs 6,8,10

``--candidate`` compares whole settings instead (repeatable; each a comma-separated
list of ``name=value`` hyperparameter overrides on the dataset's defaults, e.g. the
learning-rate schedule and augmentation), with the same rule: the candidate with
the fewest epochs within one standard error of the best, the first listed on a tie.

    .venv/bin/python bench/choose_epochs.py --dataset mnist \
        --candidate epochs=2 --candidate epochs=2,learning_rate=2e-3,warmup_fraction=0.1
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def load_split(raw_dir: Path, dataset: str):
    """(train_x, train_y, validation_x, validation_y) as the span's splits hold them,
    pixels scaled to 0..1 as ``trainer.transform.preprocessing_fn`` does."""
    import numpy as np

    from ingest.convert import hold_out_validation
    from ingest.datasets import get_dataset
    from ingest.fetch import find_idx_files, verify_idx_files
    from ingest.idx import read_idx_pair

    info = get_dataset(dataset)
    files = find_idx_files(raw_dir, info)
    verify_idx_files(files, info)
    images, labels = read_idx_pair(
        files[info.file_for("train", "images").stem], files[info.file_for("train", "labels").stem]
    )
    (train_x, train_y), (val_x, val_y), _ = hold_out_validation(images, labels)

    def scaled(x):
        return x.reshape(-1, 28, 28, 1).astype(np.float32) / 255.0

    return scaled(train_x), train_y, scaled(val_x), val_y


def validation_accuracy(dataset: str, overrides: dict, arrays) -> tuple[float, float]:
    """(validation accuracy, seconds) of one training run with ``overrides`` on the
    dataset's defaults, under the precision those settings resolve to on this CPU."""
    import numpy as np

    from trainer import data
    from trainer.hparams import DEFAULT_MODEL, hparams_for_model
    from trainer.model import build_model
    from trainer.model_fn import get_model_fn
    from trainer.train import fit, precision_policy, resolve_precision, set_seed

    train_x, train_y, val_x, val_y = arrays
    hparams = hparams_for_model(
        DEFAULT_MODEL, {**overrides, "validate_every_epoch": False}, dataset=dataset
    )
    set_seed(hparams.seed)
    steps_per_epoch = len(train_y) // hparams.batch_size
    params = {**hparams.to_params(), "total_steps": steps_per_epoch * hparams.epochs}
    train_ds = data.dataset_from_arrays(train_x, train_y, hparams.batch_size, True, hparams.seed)
    started = time.perf_counter()
    with precision_policy(resolve_precision(hparams.precision)):
        model = build_model(get_model_fn(hparams.model), params)
        fit(model, train_ds, None, hparams, steps_per_epoch)
    seconds = time.perf_counter() - started
    correct = 0
    for features, labels in data.dataset_from_arrays(val_x, val_y, 1000, False, None):
        outputs = model(features, training=False)
        predicted = np.argmax(outputs["probabilities"].numpy(), axis=1)
        correct += int((predicted == labels.numpy()).sum())
    return correct / len(val_y), seconds


def parse_candidate(text: str) -> dict:
    """``epochs=2,learning_rate=2e-3`` as typed hyperparameter overrides."""
    from trainer.hparams import parse_override

    return dict(parse_override(item) for item in text.split(",") if item.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--epochs", default="2,3,4", help="comma-separated candidates")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        help="name=value[,name=value...] overrides to compare (repeatable; replaces --epochs)",
    )
    args = parser.parse_args()
    if args.candidate:
        candidates = [parse_candidate(text) for text in args.candidate]
    else:
        candidates = [{"epochs": e} for e in sorted({int(e) for e in args.epochs.split(",")})]
    arrays = load_split(args.data_dir / "raw" / args.dataset, args.dataset)
    n = len(arrays[3])
    print(f"{args.dataset}: train {len(arrays[1])}, validation {n} (test set not read)")
    from trainer.hparams import DEFAULT_MODEL, hparams_for_model

    results = []
    for overrides in candidates:
        accuracy, seconds = validation_accuracy(args.dataset, overrides, arrays)
        epochs = hparams_for_model(DEFAULT_MODEL, overrides, dataset=args.dataset).epochs
        results.append((overrides, epochs, accuracy))
        label = ",".join(f"{k}={v}" for k, v in overrides.items())
        print(f"{label:<60} validation accuracy {accuracy:.4f}  ({seconds:.0f} s)", flush=True)
    for line in choose(results, n):
        print(line)


Result = tuple[dict, int, float]  # (overrides, epochs, validation accuracy)


def _setting(overrides: dict) -> tuple:
    return tuple((k, v) for k, v in overrides.items() if k != "seed")


def _label(setting: tuple) -> str:
    return ",".join(f"{k}={v}" for k, v in setting) or "(defaults)"


def choose(results: list[Result], n: int) -> list[str]:
    """The lines reporting the choice among ``results`` (in the order run) scored on
    ``n`` validation images: paired over seeds when every setting ran on the same two
    or more seeds, else one run per candidate against the binomial standard error."""
    by_setting: dict[tuple, dict] = {}
    epochs: dict[tuple, int] = {}
    for overrides, count, accuracy in results:
        setting = _setting(overrides)
        by_setting.setdefault(setting, {})[overrides.get("seed")] = accuracy
        epochs[setting] = count
    seeds = {frozenset(runs) for runs in by_setting.values()}
    paired = len(seeds) == 1 and len(next(iter(seeds))) >= 2
    if not paired:
        best = max(accuracy for _, _, accuracy in results)
        standard_error = math.sqrt(best * (1 - best) / n)
        within = [r for r in results if r[2] >= best - standard_error]
        chosen = min(within, key=lambda r: r[1])
        return [
            f"best {best:.4f}; one standard error {standard_error:.4f}; chosen: "
            f"{chosen[0]} ({chosen[2]:.4f}; fewest epochs within one standard error of the best)"
        ]
    order = sorted(next(iter(seeds)), key=str)
    means = {s: sum(runs.values()) / len(runs) for s, runs in by_setting.items()}
    best = max(means, key=lambda s: means[s])
    lines = [f"paired over seeds {', '.join(map(str, order))}; best mean: {_label(best)}"]
    as_good = []
    for setting, runs in by_setting.items():
        differences = [by_setting[best][seed] - runs[seed] for seed in order]
        mean = sum(differences) / len(differences)
        spread = math.sqrt(sum((d - mean) ** 2 for d in differences) / (len(differences) - 1))
        standard_error = spread / math.sqrt(len(differences))
        worse = mean > 2 * standard_error
        if not worse:
            as_good.append(setting)
        lines.append(
            f"  {_label(setting):<40} mean {means[setting]:.4f}  best minus this "
            f"{mean:+.4f} (standard error {standard_error:.4f}): "
            + ("worse" if worse else "as good")
        )
    chosen = min(as_good, key=lambda s: epochs[s])  # min keeps the first listed on a tie
    lines.append(
        f"chosen: {_label(chosen)} (mean {means[chosen]:.4f}; fewest epochs not worse than the "
        "best by more than two standard errors of the paired difference)"
    )
    return lines


if __name__ == "__main__":
    main()
