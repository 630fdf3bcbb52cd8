"""Tests of the Estimator-style cnn_model_fn run through ModelFnModel / build_model,
the layer helpers that reuse layers by name, and the seeded fit loop."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow.python.framework import config as tf_config

from trainer import layers, train
from trainer.data import dataset_from_arrays
from trainer.hparams import HParams
from trainer.model import ModelFnModel, build_model
from trainer.model_fn import (
    IMAGE_KEY,
    MODEL_FNS,
    ModeKeys,
    ModelFnSpec,
    cnn_model_fn,
    get_model_fn,
)
from trainer.optimizers import FusedAdam

PARAMS = HParams().to_params()
EXPECTED_KERNELS = {
    "conv1/kernel:0": (5, 5, 1, 32),
    "conv1/bias:0": (32,),
    "conv2/kernel:0": (5, 5, 32, 64),
    "conv2/bias:0": (64,),
    "dense/kernel:0": (3136, 1024),
    "dense/bias:0": (1024,),
    "logits/kernel:0": (1024, 10),
    "logits/bias:0": (10,),
}


@pytest.fixture(autouse=True, scope="module")
def _restore_op_determinism():
    """set_seed turns on TF op determinism process-wide; undo it after this module."""
    was_enabled = tf_config.is_op_determinism_enabled()
    yield
    if not was_enabled:
        tf_config.disable_op_determinism()


@pytest.fixture(scope="module")
def real_data(mnist_train) -> tuple[np.ndarray, np.ndarray]:
    """The first 200 fixture images scaled /255 ([200, 28, 28, 1] float32) and int64 labels."""
    images, labels = mnist_train
    return images[:200].astype(np.float32)[..., None] / np.float32(255), labels[:200].astype(
        np.int64
    )


@pytest.fixture(scope="module")
def model() -> ModelFnModel:
    """An untrained, built model (every variable and the optimizer created)."""
    return build_model(cnn_model_fn, PARAMS)


def weights(model: keras.Model) -> list[np.ndarray]:
    return [v.numpy() for v in model.trainable_variables]


def seeded_fit(seed: int, images: np.ndarray, labels: np.ndarray, steps: int) -> ModelFnModel:
    """set_seed, build, then fit ``steps`` shuffled batches of 20 with trainer.train.fit."""
    hparams = HParams(
        batch_size=20, epochs=1, max_steps=steps, seed=seed, validate_every_epoch=False
    )
    train.set_seed(seed)
    fitted = build_model(cnn_model_fn, hparams.to_params())
    dataset = dataset_from_arrays(images, labels, hparams.batch_size, True, seed)
    train.fit(fitted, dataset, None, hparams, steps_per_epoch=len(labels) // hparams.batch_size)
    assert int(fitted.optimizer.iterations.numpy()) == steps
    return fitted


def test_predict_returns_classes_and_probabilities(model, real_data):
    """PREDICT: classes int64 [N] (argmax) and probabilities float32 [N, 10] summing to 1."""
    images, _ = real_data
    spec = model.run_model_fn({IMAGE_KEY: tf.constant(images[:16])}, None, ModeKeys.PREDICT)
    assert isinstance(spec, ModelFnSpec)
    assert spec.mode == ModeKeys.PREDICT == "infer"
    assert (spec.loss, spec.optimizer, spec.eval_metric_ops) == (None, None, {})
    assert sorted(spec.predictions) == ["classes", "probabilities"]
    classes = spec.predictions["classes"]
    probabilities = spec.predictions["probabilities"]
    assert (classes.dtype, classes.shape) == (tf.int64, (16,))
    assert (probabilities.dtype, probabilities.shape) == (tf.float32, (16, 10))
    probabilities = probabilities.numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), np.ones(16), atol=1e-6)
    assert (probabilities > 0).all()
    np.testing.assert_array_equal(classes.numpy(), probabilities.argmax(axis=1))


def test_call_and_predict_use_predict_mode(model, real_data):
    """model(features) and model.predict give the PREDICT outputs, for any `training` flag."""
    images, _ = real_data
    features = {IMAGE_KEY: tf.constant(images[:8])}
    spec = model.run_model_fn(features, None, ModeKeys.PREDICT)
    called = model(features, training=True)
    predicted = model.predict(features, batch_size=8, verbose=0)
    for outputs in (called, predicted):
        np.testing.assert_array_equal(
            np.asarray(outputs["classes"]), spec.predictions["classes"].numpy()
        )
        np.testing.assert_allclose(
            np.asarray(outputs["probabilities"]),
            spec.predictions["probabilities"].numpy(),
            atol=1e-6,
        )


def test_image_may_be_given_as_flat_pixels(model, real_data):
    """The model_fn reshapes its input to [-1, 28, 28, 1], so [N, 784] gives the same result."""
    images, _ = real_data
    square = model({IMAGE_KEY: tf.constant(images[:4])})
    flat = model({IMAGE_KEY: tf.constant(images[:4].reshape(4, 784))})
    np.testing.assert_array_equal(flat["probabilities"].numpy(), square["probabilities"].numpy())


def test_train_returns_scalar_loss_optimizer_and_accuracy(model, real_data):
    """TRAIN: scalar float32 loss near ln(10) untrained, the run's optimizer, an accuracy metric."""
    images, labels = real_data
    spec = model.run_model_fn(
        {IMAGE_KEY: tf.constant(images[:32])}, tf.constant(labels[:32]), ModeKeys.TRAIN
    )
    assert spec.mode == "train"
    assert (spec.loss.dtype, spec.loss.shape) == (tf.float32, ())
    assert abs(float(spec.loss) - math.log(10)) < 0.5
    assert isinstance(spec.optimizer, keras.optimizers.Adam)
    assert spec.optimizer is model.optimizer
    assert list(spec.eval_metric_ops) == ["accuracy"]
    assert isinstance(spec.eval_metric_ops["accuracy"], keras.metrics.Accuracy)
    assert sorted(spec.predictions) == ["classes", "probabilities"]


def test_eval_returns_loss_and_accuracy_matching_predictions(model, real_data):
    """EVAL: loss is the mean cross-entropy of the PREDICT probabilities, accuracy the
    fraction of argmax == label; no optimizer."""
    images, labels = real_data
    features = {IMAGE_KEY: tf.constant(images[:64])}
    model.reset_metrics()
    spec = model.run_model_fn(features, tf.constant(labels[:64]), ModeKeys.EVAL)
    assert spec.mode == "eval"
    assert spec.optimizer is None
    assert list(spec.eval_metric_ops) == ["accuracy"]
    probabilities = model(features)["probabilities"].numpy()
    expected_loss = -np.mean(np.log(probabilities[np.arange(64), labels[:64]]))
    assert spec.loss.shape == ()
    np.testing.assert_allclose(float(spec.loss), expected_loss, rtol=1e-5)
    expected_accuracy = np.mean(probabilities.argmax(axis=1) == labels[:64])
    assert float(spec.eval_metric_ops["accuracy"].result()) == pytest.approx(
        expected_accuracy, abs=1e-7
    )


def test_labels_of_shape_n_by_1_are_accepted(model, real_data):
    """Labels as the Transform outputs them ([N, 1]) give the same loss as [N]."""
    images, labels = real_data
    features = {IMAGE_KEY: tf.constant(images[:10])}
    flat = model.run_model_fn(features, tf.constant(labels[:10]), ModeKeys.EVAL).loss
    column = model.run_model_fn(features, tf.constant(labels[:10, None]), ModeKeys.EVAL).loss
    assert float(flat) == float(column)


def test_trainable_parameter_count(model):
    """The TF layers tutorial CNN has exactly 3,274,634 trainable parameters."""
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 3_274_634
    assert len(model.trainable_variables) == 8


def test_layer_names_and_kernel_shapes(model):
    """Variables are named after the model_fn's layers, with the tutorial's shapes."""
    assert {v.name: tuple(v.shape) for v in model.trainable_variables} == EXPECTED_KERNELS
    assert list(model.fn_objects) == [
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "dense",
        "dropout",
        "logits",
        "metric/accuracy",
        "optimizer",
    ]
    assert [m.name for m in model.metrics] == ["loss", "accuracy"]


def test_mode_calls_reuse_the_same_variables(model, real_data):
    """Running every mode again creates no new layer or variable (reuse by name)."""
    images, labels = real_data
    before_ids = [id(v) for v in model.variables]
    objects = dict(model.fn_objects)
    features, y = {IMAGE_KEY: tf.constant(images[:4])}, tf.constant(labels[:4])
    for mode in (ModeKeys.TRAIN, ModeKeys.EVAL, ModeKeys.PREDICT, ModeKeys.TRAIN):
        model.run_model_fn(features, None if mode == ModeKeys.PREDICT else y, mode)
    assert [id(v) for v in model.variables] == before_ids
    assert all(model.fn_objects[k] is obj for k, obj in objects.items())
    assert len(model.fn_objects) == len(objects)


def test_dropout_only_in_train_mode(model, real_data):
    """Two TRAIN calls on the same input differ (dropout); PREDICT and EVAL calls are identical."""
    images, labels = real_data
    features, y = {IMAGE_KEY: tf.constant(images[:16])}, tf.constant(labels[:16])

    def probabilities(mode):
        spec = model.run_model_fn(features, None if mode == ModeKeys.PREDICT else y, mode)
        return spec.predictions["probabilities"].numpy(), spec.loss

    train_a, train_loss_a = probabilities(ModeKeys.TRAIN)
    train_b, train_loss_b = probabilities(ModeKeys.TRAIN)
    assert not np.array_equal(train_a, train_b)
    assert float(train_loss_a) != float(train_loss_b)

    predict_a, _ = probabilities(ModeKeys.PREDICT)
    predict_b, _ = probabilities(ModeKeys.PREDICT)
    eval_a, eval_loss_a = probabilities(ModeKeys.EVAL)
    eval_b, eval_loss_b = probabilities(ModeKeys.EVAL)
    np.testing.assert_array_equal(predict_a, predict_b)
    np.testing.assert_array_equal(eval_a, eval_b)
    np.testing.assert_array_equal(eval_a, predict_a)
    assert float(eval_loss_a) == float(eval_loss_b)


def test_dropout_rate_param_is_used(real_data):
    """With params dropout_rate=0, TRAIN predictions equal PREDICT ones."""
    images, _ = real_data
    no_dropout = build_model(cnn_model_fn, {**PARAMS, "dropout_rate": 0.0})
    assert no_dropout.fn_objects["dropout"].rate == 0.0
    features = {IMAGE_KEY: tf.constant(images[:8])}
    labels = tf.zeros([8], tf.int64)
    trained_mode = no_dropout.run_model_fn(features, labels, ModeKeys.TRAIN).predictions[
        "probabilities"
    ]
    predict_mode = no_dropout(features)["probabilities"]
    np.testing.assert_array_equal(trained_mode.numpy(), predict_mode.numpy())


def test_loss_decreases_when_fitting_real_images(real_data):
    """20 Adam steps of batch 20 on 200 real images cut the loss and lift the accuracy."""
    images, labels = real_data
    hparams = HParams(
        batch_size=20,
        epochs=2,
        max_steps=20,
        seed=7,
        validate_every_epoch=False,
        steps_per_execution=1,
    )
    train.set_seed(hparams.seed)
    fitted = build_model(cnn_model_fn, hparams.to_params())
    eval_ds = dataset_from_arrays(images, labels, 200, False, None)
    loss_before, accuracy_before = fitted.evaluate(eval_ds, verbose=0)

    train_ds = dataset_from_arrays(images, labels, hparams.batch_size, True, hparams.seed)
    history, throughput = train.fit(fitted, train_ds, None, hparams, steps_per_epoch=10)
    loss_after, accuracy_after = fitted.evaluate(eval_ds, verbose=0)

    assert int(fitted.optimizer.iterations.numpy()) == 20
    assert len(history.history["loss"]) == 2
    assert history.history["loss"][1] < history.history["loss"][0]
    assert abs(loss_before - math.log(10)) < 0.1
    assert accuracy_before < 0.3
    assert loss_after < 0.6 * loss_before
    assert accuracy_after > 0.6
    # Throughput leaves out only the run's first batch (tracing); the second epoch's
    # first batch is timed from the epoch's start.
    assert throughput.batches == 19
    assert throughput.seconds > 0
    assert throughput.images_per_second == pytest.approx(19 * 20 / throughput.seconds)


@pytest.mark.parametrize(
    ("limit", "steps_per_epoch", "max_steps", "expected"),
    [
        (25, 550, 0, 25),  # full MNIST: 55,000 training images in batches of 100
        (25, 20, 0, 20),
        (25, 10, 15, 5),  # max_steps mid-epoch: the call must end on step 15
        (25, 29, 0, 1),  # a prime above the limit: one step per call
        (1, 550, 0, 1),
        (25, 10, 4, 2),
    ],
)
def test_execution_steps_divide_the_epoch_and_max_steps(
    limit, steps_per_epoch, max_steps, expected
):
    """The steps per call are the largest divisor of the epoch (and max_steps) <= limit."""
    assert train.execution_steps(limit, steps_per_epoch, max_steps) == expected


def fit_with_steps_per_execution(
    per_call: int, images: np.ndarray, labels: np.ndarray
) -> tuple[ModelFnModel, keras.callbacks.History, train.ThroughputCallback]:
    """Two seeded epochs of 8 steps of 20 with dropout, validated after each, with
    ``per_call`` steps per call of the train function."""
    hparams = HParams(batch_size=20, epochs=2, seed=3, steps_per_execution=per_call)
    train.set_seed(hparams.seed)
    fitted = build_model(cnn_model_fn, {**hparams.to_params(), "total_steps": 16})
    train_ds = dataset_from_arrays(images[:160], labels[:160], 20, True, hparams.seed)
    validation_ds = dataset_from_arrays(images[160:], labels[160:], 1000, False, None)
    history, throughput = train.fit(
        fitted, train_ds, validation_ds, hparams, steps_per_epoch=8, validation_steps=1
    )
    return fitted, history, throughput


def test_steps_per_execution_gives_the_same_weights_and_counts_every_step(real_data):
    """Four steps per call train the same weights bit for bit as one (same seed, same
    dropout masks, same schedule), report the same per-epoch loss and validation, and
    the throughput counts the steps of every call but the first."""
    images, labels = real_data
    one, one_history, _ = fit_with_steps_per_execution(1, images, labels)
    four, four_history, throughput = fit_with_steps_per_execution(4, images, labels)
    assert four._steps_per_execution.numpy() == 4
    assert int(four.optimizer.iterations.numpy()) == int(one.optimizer.iterations.numpy()) == 16
    assert one_history.history == four_history.history
    assert set(four_history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    train.set_seed(3)  # the weights both runs started from
    before = weights(build_model(cnn_model_fn, {**PARAMS, "total_steps": 16}))
    for a, b, initial in zip(weights(one), weights(four), before, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, initial)
    # 16 steps in 4 calls; the first call (tracing) is left out.
    assert throughput.batches == 12


def test_same_seed_gives_identical_weights_and_other_seed_differs(real_data):
    """set_seed(s) + build_model + fit is reproducible bit for bit; another seed is not equal."""
    images, labels = real_data
    first = weights(seeded_fit(11, images, labels, steps=3))
    second = weights(seeded_fit(11, images, labels, steps=3))
    other = weights(seeded_fit(12, images, labels, steps=3))
    assert len(first) == len(second) == 8
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not any(np.array_equal(a, c) for a, c in zip(first, other, strict=True) if a.ndim > 1)


def test_same_seed_gives_identical_initial_weights():
    """build_model right after set_seed(s) initialises the same weights."""
    train.set_seed(5)
    first = weights(build_model(cnn_model_fn, PARAMS))
    train.set_seed(5)
    second = weights(build_model(cnn_model_fn, PARAMS))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_fit_with_max_steps_below_one_epoch(real_data):
    """max_steps smaller than an epoch stops after max_steps steps in one epoch."""
    images, labels = real_data
    hparams = HParams(batch_size=10, epochs=3, max_steps=4, validate_every_epoch=False)
    fitted = build_model(cnn_model_fn, hparams.to_params())
    dataset = dataset_from_arrays(images, labels, hparams.batch_size, True, 0)
    history, _ = train.fit(fitted, dataset, None, hparams, steps_per_epoch=20)
    assert int(fitted.optimizer.iterations.numpy()) == 4
    assert len(history.history["loss"]) == 1


def test_fit_max_steps_caps_total_steps(real_data):
    """max_steps=15 with 10 steps per epoch and 3 epochs runs exactly 15 steps."""
    images, labels = real_data
    hparams = HParams(batch_size=20, epochs=3, max_steps=15, validate_every_epoch=False)
    fitted = build_model(cnn_model_fn, hparams.to_params())
    dataset = dataset_from_arrays(images, labels, hparams.batch_size, True, 0)
    train.fit(fitted, dataset, None, hparams, steps_per_epoch=10)
    assert int(fitted.optimizer.iterations.numpy()) == 15


def test_set_seed_none_is_a_no_op():
    """set_seed(None) leaves the random state alone."""
    keras.utils.set_random_seed(3)
    expected = np.random.rand()
    keras.utils.set_random_seed(3)
    train.set_seed(None)
    assert np.random.rand() == expected


def test_get_or_create_outside_layer_scope_raises():
    """Helpers used outside layer_scope fail with a message saying what to do."""
    with pytest.raises(RuntimeError) as error:
        layers.get_or_create("conv1", lambda: object())
    assert str(error.value) == (
        "model_fn building block 'conv1' used outside layer_scope(); "
        "run model_fns through trainer.model.ModelFnModel"
    )


def test_model_fn_called_directly_raises_runtime_error():
    """Calling the model_fn outside ModelFnModel hits the same helpful error."""
    features = {IMAGE_KEY: tf.zeros([1, 28, 28, 1])}
    with pytest.raises(RuntimeError, match=r"'conv1' used outside layer_scope\(\)"):
        cnn_model_fn(features, None, ModeKeys.PREDICT, PARAMS)


def test_layer_scope_creates_once_and_restores_outer_store():
    """Within a scope the factory runs once per name; nested scopes restore the outer store."""
    calls = []
    outer, inner = {}, {}
    with layers.layer_scope(outer):
        first = layers.get_or_create("a", lambda: calls.append(1) or ["made"])
        assert layers.get_or_create("a", lambda: calls.append(2) or ["other"]) is first
        with layers.layer_scope(inner):
            layers.get_or_create("a", lambda: calls.append(3) or ["inner"])
        assert layers.get_or_create("a", lambda: calls.append(4)) is first
    assert calls == [1, 3]
    assert outer == {"a": ["made"]} and inner == {"a": ["inner"]}
    with pytest.raises(RuntimeError):
        layers.get_or_create("a", list)


def test_get_model_fn():
    """Registered names resolve; unknown names raise ValueError listing the registered ones."""
    assert get_model_fn("cnn_model_fn") is cnn_model_fn
    assert sorted(MODEL_FNS) == ["cnn_model_fn", "deep_cnn", "mlp", "softmax"]
    with pytest.raises(ValueError) as error:
        get_model_fn("nope")
    assert str(error.value) == (
        "unknown model 'nope'; registered: ['cnn_model_fn', 'deep_cnn', 'mlp', 'softmax']"
    )


@pytest.mark.parametrize(
    ("name", "cls", "momentum"),
    [
        ("adam", FusedAdam, None),
        ("sgd", keras.optimizers.SGD, 0.0),
        ("momentum", keras.optimizers.SGD, 0.9),
        ("rmsprop", keras.optimizers.RMSprop, None),
    ],
)
def test_optimizer_by_name(name, cls, momentum):
    """params['optimizer'] picks the optimizer; a constant learning rate without total_steps."""
    with layers.layer_scope({}):
        optimizer = layers.optimizer({"optimizer": name, "learning_rate": 0.01})
    assert type(optimizer) is cls
    if momentum is not None:
        assert optimizer.momentum == momentum
    assert float(optimizer.learning_rate) == pytest.approx(0.01)


def test_optimizer_cosine_decay_over_total_steps():
    """With total_steps the learning rate decays along a cosine to the final fraction."""
    params = {
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "total_steps": 100,
        "final_learning_rate_fraction": 0.05,
    }
    with layers.layer_scope({}):
        schedule = layers.optimizer(params)._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    assert float(schedule(100)) == pytest.approx(5e-5)
    assert float(schedule(500)) == pytest.approx(5e-5)


def test_unknown_optimizer_raises():
    """An unknown optimizer name is refused when the model is built."""
    with pytest.raises(ValueError, match=r"^params\['optimizer'\]: unknown optimizer 'adagrad'$"):
        build_model(cnn_model_fn, {**PARAMS, "optimizer": "adagrad"})
