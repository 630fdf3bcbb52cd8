"""The model_fn family traces under AutoGraph without its conversion warnings, and
AutoGraph leaves tf_keras's own code unconverted (trainer/tracing.py) while still
converting this project's and a user's code."""

import logging

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow.python.autograph.core import config as autograph_config
from tensorflow.python.autograph.impl import api as autograph_api
from tensorflow.python.autograph.impl import conversion

from tests.transform_fixture import build_transform_output, write_split_records
from trainer import data, export, layers, model_fn, tracing, train  # noqa: F401 (data adds the rule)
from trainer.hparams import HParams


def test_initializers_trace_without_an_autograph_warning(caplog):
    """layers.initializers runs inside every traced train step; AutoGraph could not
    convert its annotated assignment and logged "AutoGraph could not transform ...
    Please report this to the TensorFlow team" at each trace (seen in Trainer logs)."""

    @tf.function
    def traced(x):
        chosen = layers.initializers(HParams().to_params())
        return x + tf.constant(len(chosen), tf.float32)

    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        assert float(traced(tf.constant(1.0))) == 3.0
        assert float(traced(tf.constant([1.0, 2.0]))[1]) == 4.0  # a second trace
    messages = [r.getMessage() for r in caplog.records if r.name == "tensorflow"]
    assert not [m for m in messages if "AutoGraph" in m], messages


# --- tf_keras left unconverted (trainer/tracing.py) ----------------------------------


class _SignFlip(keras.layers.Layer):
    """A user's layer with Python control flow on a tensor: it traces only if AutoGraph
    converts it, which the tf_keras rule must not prevent."""

    def call(self, inputs):
        if tf.reduce_sum(inputs) > 0:
            return inputs
        return -inputs


def test_tf_keras_rule_is_added_once():
    def tf_keras_rules():
        return [str(r) for r in autograph_config.CONVERSION_RULES if r.matches(tracing.TF_KERAS)]

    # trainer.model and trainer.data add it when imported (this module imports both).
    assert tf_keras_rules() == ["DoNotConvert rule for tf_keras"]
    count = len(autograph_config.CONVERSION_RULES)
    assert tracing.exempt_tf_keras() is False
    assert len(autograph_config.CONVERSION_RULES) == count
    assert tf_keras_rules() == ["DoNotConvert rule for tf_keras"]


def test_tf_keras_methods_are_exempt_and_user_code_is_not():
    assert conversion.is_allowlisted(keras.layers.Dense(2).call)
    assert conversion.is_allowlisted(keras.metrics.Mean().update_state)
    assert conversion.is_allowlisted(keras.optimizers.Adam().apply_gradients)
    assert not conversion.is_allowlisted(_SignFlip().call)
    assert not conversion.is_allowlisted(model_fn.cnn_model_fn)


def test_user_layer_still_converted_inside_a_traced_function():
    layer = _SignFlip()

    @tf.function
    def traced(x):
        return layer(x)

    np.testing.assert_allclose(traced(tf.constant([1.0, 2.0])).numpy(), [1.0, 2.0])
    np.testing.assert_allclose(traced(tf.constant([-1.0, -2.0])).numpy(), [1.0, 2.0])


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory, mnist_train):
    """40 training and 20 validation fixture images as TFRecords, and a real Transform output."""
    images, labels = mnist_train
    root = tmp_path_factory.mktemp("tracing")
    files = write_split_records(
        root, images, labels, {"train": range(40), "validation": range(40, 60)}
    )
    return root, files["train"], files["validation"], build_transform_output(root, images, labels)


def test_train_and_export_convert_no_tf_keras_code(tiny_split, monkeypatch, caplog):
    """Every function AutoGraph converts while the Trainer's code trains (bf16 policy,
    steps per call, the Transform layer over the records) and exports: none from
    tf_keras (before the rule, each layer's call, the metrics and the optimizer were
    converted: 10 s of a full run), and still this project's model_fn."""
    root, train_files, validation_files, tft_output = tiny_split
    # What AutoGraph chose to convert on its own, while converting the functions
    # tf.function asked it for (the roots: tf_keras's train/test function, which
    # needs AutoGraph for its loop of steps, and this project's signatures).
    converted: list[str] = []
    transform = autograph_api._TRANSPILER.transform

    def recording_transform(entity, program_ctx):
        if not program_ctx.options.user_requested:
            code = getattr(entity, "__code__", None) or entity.__func__.__code__
            converted.append(f"{code.co_filename}:{code.co_name}")
        return transform(entity, program_ctx)

    monkeypatch.setattr(autograph_api._TRANSPILER, "transform", recording_transform)
    hparams = HParams(
        batch_size=10,
        epochs=2,
        max_steps=6,
        steps_per_execution=2,
        precision="bf16",
        augment_shift=2,
    )
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        model, stats = train.train(hparams, train_files, validation_files, tft_output)
        export.export_serving_model(model, tft_output, str(root / "export"), list("0123456789"))
    assert stats.steps == 6
    from_tf_keras = sorted({f for f in converted if "/tf_keras/" in f})
    assert not from_tf_keras, from_tf_keras
    assert any(f.endswith("trainer/model_fn.py:cnn_model_fn") for f in converted), converted
    messages = [r.getMessage() for r in caplog.records if r.name == "tensorflow"]
    assert not [m for m in messages if "AutoGraph" in m], messages
