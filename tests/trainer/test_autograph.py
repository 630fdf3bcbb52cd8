"""The model_fn family traces under AutoGraph without its conversion warnings."""

import logging

import tensorflow as tf

from trainer import layers
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
