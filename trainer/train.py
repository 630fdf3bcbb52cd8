"""The fit loop: seeds, datasets, callbacks (TensorBoard, throughput, history)
and ``fit`` of a model_fn on tf_keras. Model definitions live in
``trainer/model_fn.py``; the serving export lives in ``trainer/export.py``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from trainer import data
from trainer.hparams import HParams
from trainer.model import ModelFnModel, build_model
from trainer.model_fn import get_model_fn

TRAINING_STATS_FILE = "training_stats.json"


@dataclass
class TrainingStats:
    """What a training run measured; written as JSON next to the TensorBoard logs."""

    train_examples: int = 0
    # The validation split (fn_args.eval_files): what the per-epoch val_* history measures.
    validation_examples: int = 0
    steps: int = 0
    epochs: int = 0
    batch_size: int = 0
    fit_seconds: float = 0.0
    load_seconds: float = 0.0
    # Images per second over every training step except the first (graph tracing).
    images_per_second: float = 0.0
    history: dict[str, list[float]] = field(default_factory=dict)


class ThroughputCallback(keras.callbacks.Callback):
    """Times training batches only (not validation), leaving out the first batch,
    whose time is mostly tracing."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seconds = 0.0
        self.batches = 0
        self._last: float | None = None
        self._first_done = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._last = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self._last is not None and self._first_done:
            self.seconds += now - self._last
            self.batches += 1
        self._first_done = True
        self._last = now

    @property
    def images_per_second(self) -> float:
        return self.batches * self.batch_size / self.seconds if self.seconds else 0.0


class StopAtStep(keras.callbacks.Callback):
    """Ends training after exactly ``max_steps`` optimizer steps, mid-epoch if need be."""

    def __init__(self, max_steps: int) -> None:
        super().__init__()
        self.max_steps = max_steps

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if int(self.model.optimizer.iterations.numpy()) >= self.max_steps:
            self.model.stop_training = True


def set_seed(seed: int | None) -> None:
    """Same seed and data give the same weights: seeds Python, numpy and TF, and
    makes TF's kernels deterministic."""
    if seed is None:
        return
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit(
    model: ModelFnModel,
    train_ds: tf.data.Dataset,
    validation_ds: tf.data.Dataset | None,
    hparams: HParams,
    steps_per_epoch: int,
    log_dir: str | None = None,
) -> tuple[keras.callbacks.History, ThroughputCallback]:
    throughput = ThroughputCallback(hparams.batch_size)
    callbacks: list[keras.callbacks.Callback] = [throughput]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    epochs = hparams.epochs
    if hparams.max_steps:
        epochs = max(1, min(epochs, -(-hparams.max_steps // steps_per_epoch)))
        steps_per_epoch = min(steps_per_epoch, hparams.max_steps)
        callbacks.append(StopAtStep(hparams.max_steps))
    history = model.fit(
        train_ds.repeat(),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_ds if hparams.validate_every_epoch else None,
        callbacks=callbacks,
        verbose=2,
    )
    return history, throughput


def train(
    hparams: HParams,
    train_files: Sequence[str],
    validation_files: Sequence[str],
    tft_output: tft.TFTransformOutput,
    log_dir: str | None = None,
) -> tuple[ModelFnModel, TrainingStats]:
    """Train the model named by ``hparams.model`` on the Transform output of the files.

    ``validation_files`` are the validation split (held out of the official training
    set), measured after every epoch; the test split is never read here, so the
    Evaluator's gate measures data the training run has not looked at."""
    set_seed(hparams.seed)
    start = time.perf_counter()
    if hparams.in_memory:
        train_x, train_y = data.load_arrays(train_files, tft_output)
        validation_x, validation_y = data.load_arrays(validation_files, tft_output)
        train_count, validation_count = len(train_y), len(validation_y)
        train_ds = data.dataset_from_arrays(
            train_x, train_y, hparams.batch_size, True, hparams.seed
        )
        validation_ds = data.dataset_from_arrays(validation_x, validation_y, 1000, False, None)
    else:
        train_count = _count_records(train_files)
        validation_count = _count_records(validation_files)
        train_ds = data.streaming_dataset(
            train_files, tft_output, hparams.batch_size, True, hparams.seed
        )
        validation_ds = data.streaming_dataset(validation_files, tft_output, 1000, False, None)
    load_seconds = time.perf_counter() - start
    if train_count < hparams.batch_size:
        raise ValueError(
            f"training split has {train_count} examples, fewer than one batch "
            f"(hparams.batch_size={hparams.batch_size})"
        )
    steps_per_epoch = train_count // hparams.batch_size
    epochs = hparams.epochs
    total_steps = steps_per_epoch * epochs
    if hparams.max_steps:
        total_steps = min(total_steps, hparams.max_steps)
    params = {**hparams.to_params(), "total_steps": total_steps}
    model = build_model(get_model_fn(hparams.model), params)
    logging.info(
        "training %s on %d examples (%d validation), %d steps of %d",
        hparams.model,
        train_count,
        validation_count,
        total_steps,
        hparams.batch_size,
    )
    fit_start = time.perf_counter()
    history, throughput = fit(model, train_ds, validation_ds, hparams, steps_per_epoch, log_dir)
    stats = TrainingStats(
        train_examples=train_count,
        validation_examples=validation_count,
        steps=int(model.optimizer.iterations.numpy()),
        epochs=len(history.history.get("loss", [])),
        batch_size=hparams.batch_size,
        fit_seconds=round(time.perf_counter() - fit_start, 3),
        load_seconds=round(load_seconds, 3),
        images_per_second=round(throughput.images_per_second, 1),
        history={k: [float(v) for v in vals] for k, vals in history.history.items()},
    )
    if log_dir:
        write_training_stats(stats, log_dir)
    return model, stats


def _count_records(file_patterns: Sequence[str]) -> int:
    files = data.tfrecord_files(file_patterns)
    dataset = tf.data.TFRecordDataset(files, compression_type=data.compression(files))
    return int(dataset.reduce(np.int64(0), lambda count, _: count + 1).numpy())


def write_training_stats(stats: TrainingStats, directory: str) -> str:
    path = os.path.join(directory, TRAINING_STATS_FILE)
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(asdict(stats), f, indent=2)
    return path
