"""Tests of trainer/train.py's precision: bfloat16 detection from /proc/cpuinfo text,
the policy set only inside the fit and restored after it, and a model trained under
mixed_bfloat16 that still exports float32 signatures computing in float32."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow.python.framework import config as tf_config

from ingest.datasets import get_dataset
from tests.transform_fixture import build_transform_output, write_split_records
from trainer import train
from trainer.export import SERVING_SIGNATURES, export_serving_model
from trainer.hparams import HParams

AMD_ZEN4_FLAGS = "fpu vme sse sse2 avx avx2 avx512f avx512_bf16 avx512_vnni"
SAPPHIRE_RAPIDS_FLAGS = "fpu sse avx2 avx512f amx_bf16 amx_tile amx_int8"
NO_BF16_FLAGS = "fpu vme sse sse2 avx avx2 fma f16c sha_ni vaes"


def cpuinfo(flags: str, processors: int = 2) -> str:
    """/proc/cpuinfo text with ``processors`` entries carrying ``flags``."""
    entry = "processor\t: {n}\nvendor_id\t: AuthenticAMD\nmodel name\t: EPYC\nflags\t\t: {flags}\n"
    return "\n".join(entry.format(n=n, flags=flags) for n in range(processors))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (cpuinfo(AMD_ZEN4_FLAGS), True),
        (cpuinfo(SAPPHIRE_RAPIDS_FLAGS), True),
        (cpuinfo(NO_BF16_FLAGS), False),
        # A flag name inside another field, or a prefix of a flag, is not the flag.
        ("model name\t: avx512_bf16 edition\nflags\t: avx2 avx512f\n", False),
        ("flags\t: avx512_bf16x\n", False),
        ("", False),
    ],
)
def test_cpu_has_bf16_reads_the_flags_line(text, expected):
    """avx512_bf16 or amx_bf16 on a flags line means bf16; nothing else does."""
    assert train.cpu_has_bf16(text) is expected


@pytest.mark.parametrize(
    ("setting", "flags", "expected"),
    [
        ("auto", AMD_ZEN4_FLAGS, "bf16"),
        ("auto", NO_BF16_FLAGS, "fp32"),
        ("fp32", AMD_ZEN4_FLAGS, "fp32"),
        ("bf16", NO_BF16_FLAGS, "bf16"),
    ],
)
def test_resolve_precision(setting, flags, expected):
    """auto follows the CPU; fp32 and bf16 are taken as asked."""
    assert train.resolve_precision(setting, cpuinfo(flags)) == expected


def test_resolve_precision_rejects_unknown_setting():
    with pytest.raises(
        ValueError, match=r"^hparams\.precision: expected one of auto, fp32, bf16, got 'fp16'$"
    ):
        train.resolve_precision("fp16", "")


def test_this_machine_is_read_without_error():
    """The real /proc/cpuinfo (or its absence) gives a bool, and auto a known precision."""
    assert isinstance(train.cpu_has_bf16(), bool)
    assert train.resolve_precision("auto") in ("fp32", "bf16")


def test_precision_policy_is_restored_even_on_error():
    before = keras.mixed_precision.global_policy().name
    with pytest.raises(RuntimeError, match="inside"), train.precision_policy("bf16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        raise RuntimeError("inside")
    assert keras.mixed_precision.global_policy().name == before


@pytest.fixture(scope="module")
def split_files(tmp_path_factory, mnist_train) -> tuple[list[str], list[str], object]:
    """60 training and 20 validation fixture images as ExampleGen-style TFRecords, and a
    real Transform output."""
    images, labels = mnist_train
    root = tmp_path_factory.mktemp("precision")
    files = write_split_records(
        root, images, labels, {"train": range(60), "validation": range(60, 80)}
    )
    return files["train"], files["validation"], build_transform_output(root, images, labels)


@pytest.fixture(scope="module")
def bf16_trained(split_files):
    """train() with precision=bf16 for 3 steps of 10 (bf16 is emulated on CPUs without
    it, so the run is kept tiny); the policy before and after, and the result."""
    was_deterministic = tf_config.is_op_determinism_enabled()
    train_files, validation_files, tft_output = split_files
    before = keras.mixed_precision.global_policy().name
    hparams = HParams(
        batch_size=10,
        epochs=1,
        max_steps=3,
        precision="bf16",
        augment_shift=2,
        validate_every_epoch=False,
    )
    model, stats = train.train(hparams, train_files, validation_files, tft_output)
    after = keras.mixed_precision.global_policy().name
    yield before, after, model, stats, tft_output
    if not was_deterministic:
        tf_config.disable_op_determinism()


def test_policy_restored_after_fit(bf16_trained):
    """The fit ran under mixed_bfloat16 and the global policy is back to what it was."""
    before, after, _, stats, _ = bf16_trained
    assert before == after == "float32"
    assert stats.precision == "bf16"
    assert stats.steps == 3
    assert stats.validation_examples == 20


def test_bf16_trained_model_is_returned_in_float32(bf16_trained):
    """Every layer of the returned model computes in float32 and its weights are the
    trained ones (not the float32 twin's fresh initial values)."""
    _, _, model, _, _ = bf16_trained
    policies = {
        obj.dtype_policy.name
        for key, obj in model.fn_objects.items()
        if isinstance(obj, keras.layers.Layer) and not key.startswith("metric/")
    }
    assert policies == {"float32"}
    outputs = model({"image": tf.zeros([2, 28, 28, 1])}, training=False)
    assert outputs["probabilities"].dtype == tf.float32
    assert int(model.optimizer.iterations.numpy()) == 0  # the twin's own optimizer


def test_bf16_training_gives_float32_signatures(bf16_trained, tmp_path, mnist_train):
    """The export of a bf16-trained model: float32 pixel inputs and float32 outputs on
    every signature, and the loaded model's probabilities sum to 1 in float32."""
    _, _, model, _, tft_output = bf16_trained
    directory = str(tmp_path / "serving_model")
    export_serving_model(model, tft_output, directory, get_dataset("mnist").class_names)
    loaded = tf.saved_model.load(directory)
    assert sorted(loaded.signatures) == sorted(SERVING_SIGNATURES)
    for name in ("predict_images", "predict_pixels"):
        signature = loaded.signatures[name]
        assert signature.structured_input_signature[1]["images"].dtype == tf.float32
    for name in SERVING_SIGNATURES:
        outputs = loaded.signatures[name].structured_outputs
        for key in ("probabilities", "scores"):
            if key in outputs:
                assert outputs[key].dtype == tf.float32, (name, key)
    images, _ = mnist_train
    scores = loaded.signatures["predict_images"](
        images=tf.constant(images[:4].reshape(4, 784).astype(np.float32) / 255.0)
    )["scores"].numpy()
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
