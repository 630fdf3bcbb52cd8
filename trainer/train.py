"""The fit loop: seeds, datasets, the arithmetic precision, callbacks (TensorBoard,
throughput, history) and ``fit`` of a model_fn on tf_keras. Model definitions live
in ``trainer/model_fn.py``; the serving export lives in ``trainer/export.py``.

Precision: on a CPU with bfloat16 instructions (AVX512_BF16 or AMX) the fit runs
under tf_keras's ``mixed_bfloat16`` policy, which keeps the variables in float32
and does the convolutions and matrix products in bfloat16, about twice the
float32 rate on such a CPU. Elsewhere bfloat16 would be emulated and slower, so
``precision="auto"`` trains in float32 there. Either way the model handed back
computes in float32 (the trained weights copied into a float32 twin), so the
export, its verification and the Evaluator see one float32 model on any CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
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
# Examples per batch of the per-epoch validation pass.
VALIDATION_BATCH = 1000
CPUINFO = "/proc/cpuinfo"
# /proc/cpuinfo flags of the instructions that make bfloat16 faster than float32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
MIXED_BF16_POLICY = "mixed_bfloat16"


def cpu_has_bf16(cpuinfo_text: str | None = None) -> bool:
    """Whether the CPU reports native bfloat16 arithmetic: an ``avx512_bf16`` or
    ``amx_bf16`` flag on a ``flags`` line of /proc/cpuinfo (or of ``cpuinfo_text``).

    Read at run time, not at import or build time, because the same image and the
    same pipeline run on machines with and without it; a missing or unreadable
    /proc/cpuinfo (not Linux) means no."""
    if cpuinfo_text is None:
        try:
            with open(CPUINFO, encoding="utf-8", errors="replace") as f:
                cpuinfo_text = f.read()
        except OSError:
            return False
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and set(value.split()) & set(BF16_CPU_FLAGS):
            return True
    return False


def resolve_precision(setting: str, cpuinfo_text: str | None = None) -> str:
    """``fp32`` or ``bf16``: what ``HParams.precision`` (auto, fp32, bf16) means on this CPU."""
    if setting == "auto":
        return "bf16" if cpu_has_bf16(cpuinfo_text) else "fp32"
    if setting in ("fp32", "bf16"):
        return setting
    raise ValueError(f"hparams.precision: expected one of auto, fp32, bf16, got {setting!r}")


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """tf_keras's global dtype policy for ``precision`` (``fp32`` or ``bf16``) inside
    the block, the previous policy restored after it, even on error, so a model built
    later in the same process (a test, the export's float32 twin) is not affected."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(MIXED_BF16_POLICY if precision == "bf16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@dataclass
class TrainingStats:
    """What a training run measured; written as JSON next to the TensorBoard logs."""

    train_examples: int = 0
    # The validation split (fn_args.eval_files): what the per-epoch val_* history measures.
    validation_examples: int = 0
    steps: int = 0
    epochs: int = 0
    batch_size: int = 0
    # "fp32" or "bf16": the arithmetic of the fit (the returned model is float32 either way).
    precision: str = "fp32"
    fit_seconds: float = 0.0
    load_seconds: float = 0.0
    # Images per second over every training step except the first (graph tracing).
    images_per_second: float = 0.0
    history: dict[str, list[float]] = field(default_factory=dict)


class ThroughputCallback(keras.callbacks.Callback):
    """Times training steps only (not validation), leaving out the first call of the
    train function, whose time is mostly tracing. With ``steps_per_execution`` > 1
    Keras calls back once per call, with the index of its last step."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seconds = 0.0
        self.batches = 0
        self._last = 0.0
        self._last_batch = -1
        self._first_done = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._last = time.perf_counter()
        self._last_batch = -1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self._first_done:
            self.seconds += now - self._last
            self.batches += batch - self._last_batch
        self._first_done = True
        self._last = now
        self._last_batch = batch

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


def execution_steps(limit: int, steps_per_epoch: int, max_steps: int = 0) -> int:
    """Steps per call of the train function: the largest divisor of ``steps_per_epoch``
    (and of ``max_steps`` when set) up to ``limit``, so that every epoch and a
    ``max_steps`` stop fall on the end of a call. 550 steps per epoch and a limit of 25:
    25; a prime number of steps: 1."""
    whole = math.gcd(steps_per_epoch, max_steps) if max_steps else steps_per_epoch
    return max(d for d in range(1, max(1, min(limit, whole)) + 1) if whole % d == 0)


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
    validation_steps: int | None = None,
) -> tuple[keras.callbacks.History, ThroughputCallback]:
    """``model.fit`` for ``hparams.epochs`` epochs of ``steps_per_epoch`` steps (fewer
    when ``hparams.max_steps`` says so), running ``execution_steps(...)`` steps per call
    of the compiled train function. ``validation_steps``: batches in one pass over
    ``validation_ds``, needed when its size is unknown and more than one step runs per
    call."""
    throughput = ThroughputCallback(hparams.batch_size)
    callbacks: list[keras.callbacks.Callback] = [throughput]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    epochs = hparams.epochs
    if hparams.max_steps:
        epochs = max(1, min(epochs, -(-hparams.max_steps // steps_per_epoch)))
        steps_per_epoch = min(steps_per_epoch, hparams.max_steps)
        callbacks.append(StopAtStep(hparams.max_steps))
    per_call = execution_steps(hparams.steps_per_execution, steps_per_epoch, hparams.max_steps)
    if per_call != 1:
        # Compiling again keeps the optimizer, its slots and the model's variables.
        model.compile(optimizer=model.optimizer, steps_per_execution=per_call)
    history = model.fit(
        train_ds.repeat(),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_ds if hparams.validate_every_epoch else None,
        validation_steps=validation_steps,
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
        # Read, transformed and counted in one pass each, then trained on from memory
        # (trainer/data.py); no separate pass counts the records.
        train_cache, train_count = data.cache_split(train_files, tft_output)
        validation_cache, validation_count = data.cache_split(validation_files, tft_output)
        train_ds = data.batches_from_cache(
            train_cache, hparams.batch_size, True, hparams.seed, train_count
        )
        validation_ds = data.batches_from_cache(validation_cache, VALIDATION_BATCH, False, None)
    else:
        train_count = _count_records(train_files)
        validation_count = _count_records(validation_files)
        train_ds = data.streaming_dataset(
            train_files, tft_output, hparams.batch_size, True, hparams.seed
        )
        validation_ds = data.streaming_dataset(
            validation_files, tft_output, VALIDATION_BATCH, False, None
        )
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
    precision = resolve_precision(hparams.precision)
    logging.info(
        "training %s on %d examples (%d validation), %d steps of %d, %s",
        hparams.model,
        train_count,
        validation_count,
        total_steps,
        hparams.batch_size,
        precision,
    )
    fit_start = time.perf_counter()
    with precision_policy(precision):
        model = build_model(get_model_fn(hparams.model), params)
        history, throughput = fit(
            model,
            train_ds,
            validation_ds,
            hparams,
            steps_per_epoch,
            log_dir,
            validation_steps=-(-validation_count // VALIDATION_BATCH),
        )
    steps = int(model.optimizer.iterations.numpy())
    if precision == "bf16":
        model = float32_twin(model, hparams.model, params)
    stats = TrainingStats(
        train_examples=train_count,
        validation_examples=validation_count,
        steps=steps,
        epochs=len(history.history.get("loss", [])),
        batch_size=hparams.batch_size,
        precision=precision,
        fit_seconds=round(time.perf_counter() - fit_start, 3),
        load_seconds=round(load_seconds, 3),
        images_per_second=round(throughput.images_per_second, 1),
        history={k: [float(v) for v in vals] for k, vals in history.history.items()},
    )
    if log_dir:
        write_training_stats(stats, log_dir)
    return model, stats


def float32_twin(model: ModelFnModel, model_name: str, params: dict) -> ModelFnModel:
    """A float32 copy of a model trained under ``mixed_bfloat16``: the same model_fn
    built under the float32 policy, with the trained variables (float32 under either
    policy) copied in. What is exported then computes in float32 on any CPU."""
    with precision_policy("fp32"):
        twin = build_model(get_model_fn(model_name), params)
    twin.set_weights(model.get_weights())
    return twin


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
