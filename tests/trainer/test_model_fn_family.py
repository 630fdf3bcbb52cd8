"""Tests of the four registered model_fns (softmax, mlp, deep_cnn, cnn_model_fn) on the
real-data fixture: the Estimator contract in every mode, exact parameter counts, the
tutorials' initialisers and dropout taken from params, the optimizer each model's
defaults build, a short fit that lowers the loss, and the serving export of each."""

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tensorflow.python.framework import config as tf_config

from ingest.convert import image_to_example
from ingest.datasets import get_dataset
from tests.transform_fixture import build_transform_output
from trainer import layers, train
from trainer.data import dataset_from_arrays
from trainer.export import export_serving_model
from trainer.hparams import MODEL_DEFAULTS, hparams_for_model
from trainer.model import ModelFnModel, build_model
from trainer.model_fn import IMAGE_KEY, MODEL_FNS, ModeKeys, ModelFnSpec, get_model_fn
from trainer.optimizers import FusedAdam

MODELS = ["softmax", "mlp", "deep_cnn", "cnn_model_fn"]
CNN_SHAPES = {
    "conv1/kernel:0": (5, 5, 1, 32),
    "conv1/bias:0": (32,),
    "conv2/kernel:0": (5, 5, 32, 64),
    "conv2/bias:0": (64,),
}
EXPECTED_VARIABLES = {
    "softmax": {"logits/kernel:0": (784, 10), "logits/bias:0": (10,)},
    "mlp": {
        "hidden/kernel:0": (784, 128),
        "hidden/bias:0": (128,),
        "logits/kernel:0": (128, 10),
        "logits/bias:0": (10,),
    },
    "deep_cnn": {
        **CNN_SHAPES,
        "fc1/kernel:0": (3136, 1024),
        "fc1/bias:0": (1024,),
        "fc2/kernel:0": (1024, 10),
        "fc2/bias:0": (10,),
    },
    "cnn_model_fn": {
        **CNN_SHAPES,
        "dense/kernel:0": (3136, 1024),
        "dense/bias:0": (1024,),
        "logits/kernel:0": (1024, 10),
        "logits/bias:0": (10,),
    },
}
PARAMETER_COUNTS = {
    "softmax": 7_850,
    "mlp": 101_770,
    "deep_cnn": 3_274_634,
    "cnn_model_fn": 3_274_634,
}
# Standard deviation of a normal truncated at +-2 sigma, as a fraction of sigma.
TRUNCATED_STD_FRACTION = 0.8796
MNIST_CLASS_NAMES = get_dataset("mnist").class_names
N = 12


@pytest.fixture(autouse=True, scope="module")
def _restore_op_determinism():
    """set_seed turns on TF op determinism process-wide; undo it after this module."""
    was_enabled = tf_config.is_op_determinism_enabled()
    yield
    if not was_enabled:
        tf_config.disable_op_determinism()


@pytest.fixture(scope="module")
def real_data(mnist_train) -> tuple[np.ndarray, np.ndarray]:
    """The first 200 MNIST fixture images scaled /255 ([200, 28, 28, 1]) and int64 labels."""
    images, labels = mnist_train
    scaled = images[:200].astype(np.float32)[..., None] / np.float32(255)
    return scaled, labels[:200].astype(np.int64)


def default_params(model: str, **overrides) -> dict:
    """The model's default params as the Trainer passes them (total_steps added)."""
    return {**hparams_for_model(model, overrides).to_params(), "total_steps": 1000}


@pytest.fixture(scope="module")
def built() -> dict[str, ModelFnModel]:
    """Every model, untrained, built from its own defaults after set_seed(0)."""
    models = {}
    for name in MODELS:
        train.set_seed(0)
        models[name] = build_model(get_model_fn(name), default_params(name))
    return models


def parameter_count(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def variables(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.name: v.numpy() for v in model.trainable_variables}


def test_registry_matches_the_defaults_table():
    """Every registered model_fn has a row in MODEL_DEFAULTS and the other way round."""
    assert sorted(MODEL_FNS) == sorted(MODEL_DEFAULTS) == sorted(MODELS)
    for name in MODELS:
        assert get_model_fn(name) is MODEL_FNS[name]
        assert MODEL_DEFAULTS[name].hparams.model == name
        assert MODEL_DEFAULTS[name].tutorial_hparams.model == name


@pytest.mark.parametrize("name", MODELS)
def test_exact_parameter_count_and_variables(built, name):
    """softmax 7,850, mlp 101,770, deep_cnn and cnn_model_fn 3,274,634 parameters,
    in variables named after the model_fn's layers."""
    model = built[name]
    assert parameter_count(model) == PARAMETER_COUNTS[name]
    assert {v.name: tuple(v.shape) for v in model.trainable_variables} == (EXPECTED_VARIABLES[name])


@pytest.mark.parametrize("name", MODELS)
def test_predict_mode(built, real_data, name):
    """PREDICT: classes int64 [N] (the argmax) and probabilities float32 [N, 10] summing
    to 1; no loss, optimizer or metrics; [N, 784] input gives the same answer."""
    model = built[name]
    images, _ = real_data
    spec = model.run_model_fn({IMAGE_KEY: tf.constant(images[:16])}, None, ModeKeys.PREDICT)
    assert isinstance(spec, ModelFnSpec)
    assert spec.mode == "infer"
    assert (spec.loss, spec.optimizer, spec.eval_metric_ops) == (None, None, {})
    assert sorted(spec.predictions) == ["classes", "probabilities"]
    classes = spec.predictions["classes"]
    probabilities = spec.predictions["probabilities"]
    assert (classes.dtype, classes.shape) == (tf.int64, (16,))
    assert (probabilities.dtype, probabilities.shape) == (tf.float32, (16, 10))
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), np.ones(16), atol=1e-6)
    np.testing.assert_array_equal(classes.numpy(), probabilities.numpy().argmax(axis=1))

    flat = model({IMAGE_KEY: tf.constant(images[:16].reshape(16, 784))})
    np.testing.assert_array_equal(flat["probabilities"].numpy(), probabilities.numpy())


@pytest.mark.parametrize("name", MODELS)
def test_train_mode(built, real_data, name):
    """TRAIN: a scalar float32 loss, the model's compiled optimizer, an accuracy metric."""
    model = built[name]
    images, labels = real_data
    spec = model.run_model_fn(
        {IMAGE_KEY: tf.constant(images[:32])}, tf.constant(labels[:32]), ModeKeys.TRAIN
    )
    assert spec.mode == "train"
    assert (spec.loss.dtype, spec.loss.shape) == (tf.float32, ())
    assert math.isfinite(float(spec.loss)) and float(spec.loss) > 0
    assert spec.optimizer is model.optimizer
    assert list(spec.eval_metric_ops) == ["accuracy"]
    assert isinstance(spec.eval_metric_ops["accuracy"], keras.metrics.Accuracy)
    assert sorted(spec.predictions) == ["classes", "probabilities"]


@pytest.mark.parametrize("name", MODELS)
def test_eval_mode(built, real_data, name):
    """EVAL: loss is the mean cross-entropy of the PREDICT probabilities and accuracy the
    fraction of argmax == label; no optimizer."""
    model = built[name]
    images, labels = real_data
    features = {IMAGE_KEY: tf.constant(images[:64])}
    model.reset_metrics()
    spec = model.run_model_fn(features, tf.constant(labels[:64, None]), ModeKeys.EVAL)
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


@pytest.mark.parametrize(
    ("name", "optimizer_class", "learning_rate"),
    [
        ("softmax", keras.optimizers.SGD, 0.5),
        ("mlp", FusedAdam, 1e-3),
        ("deep_cnn", FusedAdam, 1e-4),
    ],
)
def test_tutorial_optimizers_use_a_constant_learning_rate(
    built, name, optimizer_class, learning_rate
):
    """The tutorials' optimizers with a constant learning rate, even with total_steps known."""
    optimizer = built[name].optimizer
    assert type(optimizer) is optimizer_class
    assert not isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    assert float(optimizer.learning_rate) == pytest.approx(learning_rate)
    if name == "softmax":
        assert optimizer.momentum == 0.0


def test_cnn_model_fn_keeps_cosine_decayed_adam(built):
    """cnn_model_fn's defaults: Adam 1e-3 decayed along a cosine to 5% over total_steps."""
    optimizer = built["cnn_model_fn"].optimizer
    assert type(optimizer) is FusedAdam
    schedule = optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert (schedule.initial_learning_rate, schedule.decay_steps, schedule.alpha) == (
        1e-3,
        1000,
        0.05,
    )


def test_optimizer_override_reaches_the_model():
    """--param optimizer=... learning_rate=... changes the optimizer the model_fn builds."""
    model = build_model(
        get_model_fn("mlp"), default_params("mlp", optimizer="momentum", learning_rate=0.05)
    )
    assert type(model.optimizer) is keras.optimizers.SGD
    assert model.optimizer.momentum == 0.9
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)


def test_softmax_starts_from_zero_weights_and_bias(built, real_data):
    """As in the tutorial, W and b start at zero: every probability is exactly 0.1 and the
    loss ln(10) before training."""
    model = built["softmax"]
    for name, value in variables(model).items():
        assert not value.any(), name
    images, labels = real_data
    spec = model.run_model_fn(
        {IMAGE_KEY: tf.constant(images[:20])}, tf.constant(labels[:20]), ModeKeys.EVAL
    )
    np.testing.assert_array_equal(
        spec.predictions["probabilities"].numpy(), np.full((20, 10), 0.1, np.float32)
    )
    assert float(spec.loss) == pytest.approx(math.log(10), abs=1e-6)


def test_deep_cnn_uses_truncated_normal_weights_and_constant_biases(built):
    """deep_cnn: weights truncated normal stddev 0.1 (none beyond 0.2), biases all 0.1."""
    values = variables(built["deep_cnn"])
    for name, value in values.items():
        if name.endswith("bias:0"):
            np.testing.assert_array_equal(value, np.full(value.shape, 0.1, np.float32))
        else:
            assert np.abs(value).max() <= 0.2, name
    fc1 = values["fc1/kernel:0"]
    assert fc1.std() == pytest.approx(0.1 * TRUNCATED_STD_FRACTION, abs=5e-4)
    assert abs(fc1.mean()) < 5e-4
    assert np.abs(fc1).max() > 0.199


@pytest.mark.parametrize(("name", "layer"), [("mlp", "hidden"), ("cnn_model_fn", "dense")])
def test_keras_default_initialisation_elsewhere(built, name, layer):
    """mlp and cnn_model_fn keep Keras's defaults: glorot_uniform kernels, zero biases."""
    values = variables(built[name])
    kernel = values[f"{layer}/kernel:0"]
    limit = math.sqrt(6 / sum(kernel.shape))
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.99 * limit
    assert kernel.std() == pytest.approx(limit / math.sqrt(3), rel=0.01)
    for bias_name in (n for n in values if n.endswith("bias:0")):
        assert not values[bias_name].any(), bias_name


def test_initialiser_overrides_reach_every_layer():
    """kernel_initializer, kernel_init_stddev and bias_init_value from params are used."""
    model = build_model(
        get_model_fn("mlp"),
        default_params(
            "mlp",
            kernel_initializer="truncated_normal",
            kernel_init_stddev=0.02,
            bias_init_value=-0.5,
        ),
    )
    values = variables(model)
    np.testing.assert_array_equal(values["hidden/bias:0"], np.full(128, -0.5, np.float32))
    np.testing.assert_array_equal(values["logits/bias:0"], np.full(10, -0.5, np.float32))
    hidden = values["hidden/kernel:0"]
    assert np.abs(hidden).max() <= 0.04
    assert hidden.std() == pytest.approx(0.02 * TRUNCATED_STD_FRACTION, rel=0.02)

    glorot_softmax = build_model(
        get_model_fn("softmax"), default_params("softmax", kernel_initializer="glorot_uniform")
    )
    assert np.abs(variables(glorot_softmax)["logits/kernel:0"]).max() > 0.05


def test_unknown_initializer_in_params_raises():
    """layers.initializers refuses a name it does not know (params that skipped validation)."""
    with pytest.raises(
        ValueError, match=r"^params\['kernel_initializer'\]: unknown initializer 'orthogonal'$"
    ):
        layers.initializers({"kernel_initializer": "orthogonal"})


def test_deep_cnn_dropout_rate_comes_from_params(built, real_data):
    """deep_cnn drops with rate 0.5 (keep_prob 0.5) in TRAIN only; params change the rate."""
    model = built["deep_cnn"]
    dropout = model.fn_objects["dropout"]
    assert dropout.rate == 0.5
    dropped = dropout(tf.ones([64, 1024]), training=True).numpy()
    assert 0.45 < np.mean(dropped == 0) < 0.55
    np.testing.assert_array_equal(np.unique(dropped), [0.0, 2.0])

    images, labels = real_data
    features, y = {IMAGE_KEY: tf.constant(images[:16])}, tf.constant(labels[:16])
    train_a = model.run_model_fn(features, y, ModeKeys.TRAIN).predictions["probabilities"]
    train_b = model.run_model_fn(features, y, ModeKeys.TRAIN).predictions["probabilities"]
    assert not np.array_equal(train_a.numpy(), train_b.numpy())
    predict_a = model(features)["probabilities"].numpy()
    np.testing.assert_array_equal(model(features)["probabilities"].numpy(), predict_a)

    overridden = build_model(
        get_model_fn("deep_cnn"), default_params("deep_cnn", dropout_rate=0.25)
    )
    assert overridden.fn_objects["dropout"].rate == 0.25
    no_dropout = build_model(get_model_fn("deep_cnn"), default_params("deep_cnn", dropout_rate=0.0))
    np.testing.assert_array_equal(
        no_dropout.run_model_fn(features, y, ModeKeys.TRAIN).predictions["probabilities"].numpy(),
        no_dropout(features)["probabilities"].numpy(),
    )


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_models_without_dropout_train_on_what_they_predict(built, real_data, name):
    """softmax and mlp have no dropout layer: TRAIN-mode predictions equal PREDICT's."""
    model = built[name]
    assert not any(key.startswith("dropout") for key in model.fn_objects)
    images, labels = real_data
    features = {IMAGE_KEY: tf.constant(images[:16])}
    trained_mode = model.run_model_fn(features, tf.constant(labels[:16]), ModeKeys.TRAIN)
    np.testing.assert_array_equal(
        trained_mode.predictions["probabilities"].numpy(), model(features)["probabilities"].numpy()
    )


@dataclass
class FitRun:
    model: ModelFnModel
    loss_before: float
    accuracy_before: float
    loss_after: float
    accuracy_after: float
    epoch_losses: list[float]


@pytest.fixture(scope="module")
def fit_run(real_data):
    """A function giving, once per model, the result of 20 steps (2 epochs of 10 batches of
    20) on 200 real MNIST images with the model's own default optimizer and learning rate."""
    images, labels = real_data

    @functools.cache
    def run(name: str) -> FitRun:
        overrides = {"batch_size": 20, "epochs": 2, "max_steps": 20, "seed": 7}
        hparams = hparams_for_model(name, {**overrides, "validate_every_epoch": False})
        train.set_seed(hparams.seed)
        model = build_model(get_model_fn(name), {**hparams.to_params(), "total_steps": 20})
        eval_ds = dataset_from_arrays(images, labels, 200, False, None)
        loss_before, accuracy_before = model.evaluate(eval_ds, verbose=0)
        train_ds = dataset_from_arrays(images, labels, hparams.batch_size, True, hparams.seed)
        history, _ = train.fit(model, train_ds, None, hparams, steps_per_epoch=10)
        loss_after, accuracy_after = model.evaluate(eval_ds, verbose=0)
        assert int(model.optimizer.iterations.numpy()) == 20
        return FitRun(
            model, loss_before, accuracy_before, loss_after, accuracy_after, history.history["loss"]
        )

    return run


# Measured on this fixture with seed 7: loss before -> after and accuracy after.
# softmax 2.30 -> 0.38 (0.90); mlp 2.45 -> 1.00 (0.85); deep_cnn 6.91 -> 1.65 (0.40,
# the tutorial's initialisation starts far from uniform and Adam 1e-4 is slow);
# cnn_model_fn 2.31 -> 0.91 (0.86). The bounds below leave a margin.
FIT_BOUNDS = {
    "softmax": (0.3, 0.8),
    "mlp": (0.6, 0.7),
    "deep_cnn": (0.4, 0.3),
    "cnn_model_fn": (0.6, 0.7),
}


@pytest.mark.parametrize("name", MODELS)
def test_training_on_real_images_lowers_the_loss(fit_run, name):
    """20 steps with each model's default optimizer cut the loss on 200 real MNIST images
    to a fraction of its start and lift the accuracy well above chance."""
    run = fit_run(name)
    loss_ratio, accuracy_floor = FIT_BOUNDS[name]
    assert len(run.epoch_losses) == 2
    assert run.epoch_losses[1] < run.epoch_losses[0]
    assert run.accuracy_before < 0.2
    assert run.loss_after < loss_ratio * run.loss_before
    assert run.accuracy_after > accuracy_floor
    if name == "softmax":
        assert run.loss_before == pytest.approx(math.log(10), abs=1e-5)


# Accuracy of the exported models (20 training steps) on the 200 held-out MNIST fixture
# images, measured: softmax 0.59, mlp 0.565, deep_cnn 0.29, cnn_model_fn 0.675 (chance 0.1).
HELD_OUT_FLOORS = {"softmax": 0.45, "mlp": 0.45, "deep_cnn": 0.2, "cnn_model_fn": 0.5}


@pytest.fixture(scope="module")
def tft_output(tmp_path_factory, mnist_train) -> tft.TFTransformOutput:
    """A real Transform output built with tft_beam from 8 raw MNIST fixture examples."""
    images, labels = mnist_train
    return build_transform_output(tmp_path_factory.mktemp("transform"), images, labels)


@pytest.mark.parametrize("name", MODELS)
def test_export_serves_probabilities_summing_to_one(
    fit_run, tft_output, mnist_eval, tmp_path, name
):
    """Each briefly trained model exports through trainer/export.py; its serving_default
    (tf.Examples) and predict_pixels_uint8 (pixels) signatures give classes, probabilities
    summing to 1 and class names, equal to the Keras model's own predictions, and do
    better than chance on the 200 held-out fixture images."""
    model = fit_run(name).model
    export_dir = str(tmp_path / "serving_model")
    export_serving_model(model, tft_output, export_dir, MNIST_CLASS_NAMES)
    loaded = tf.saved_model.load(export_dir)

    images, labels = mnist_eval
    images, labels = images[:N], labels[:N]
    examples = tf.constant(
        [
            image_to_example(im, int(lb)).SerializeToString()
            for im, lb in zip(images, labels, strict=True)
        ]
    )
    from_examples = loaded.signatures["serving_default"](examples=examples)
    from_pixels = loaded.signatures["predict_pixels_uint8"](images=tf.constant(images))
    direct = model({IMAGE_KEY: tf.constant(images.astype(np.float32)[..., None] / np.float32(255))})
    for outputs in (from_examples, from_pixels):
        outputs = {key: value.numpy() for key, value in outputs.items()}
        assert sorted(outputs) == ["class_names", "classes", "probabilities"]
        assert (outputs["classes"].dtype, outputs["classes"].shape) == (np.int64, (N,))
        assert (outputs["probabilities"].dtype, outputs["probabilities"].shape) == (
            np.float32,
            (N, 10),
        )
        np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), np.ones(N), atol=1e-6)
        np.testing.assert_array_equal(outputs["classes"], outputs["probabilities"].argmax(axis=1))
        assert outputs["class_names"].tolist() == [
            MNIST_CLASS_NAMES[c].encode() for c in outputs["classes"]
        ]
        np.testing.assert_allclose(
            outputs["probabilities"], direct["probabilities"].numpy(), atol=1e-5
        )
    all_images, all_labels = mnist_eval
    served = loaded.signatures["predict_pixels_uint8"](images=tf.constant(all_images))
    held_out_accuracy = np.mean(served["classes"].numpy() == all_labels)
    assert held_out_accuracy > HELD_OUT_FLOORS[name]
