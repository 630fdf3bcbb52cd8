"""``--mixed-precision bfloat16`` (TF Serving's ``--mixed_precision=bfloat16``): models
without tables or assets are frozen and run through grappler's oneDNN bfloat16 pass,
others keep their variables (TF Serving's way); answers stay within bfloat16's
rounding of float32's and pick the same classes, and TF Serving's test models give
their documented answers. Whether the pass changed anything depends on the CPU: with
AVX512_BF16 or AMX it must have (the answers are not float32's bit for bit), elsewhere
TensorFlow leaves the model in float32 and the answers are float32's."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from serving.signatures import ServableModel, _Session
from tests import tf_serving_models
from tests.serving_fixture import (
    MODEL_NAME,
    ServerProcess,
    exported_versions,
    mnist_images,
    push,
)


def cpu_has_bfloat16() -> bool:
    """What TensorFlow's oneDNN pass asks of the CPU: AVX512_BF16 or AMX_BF16."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = {flag for line in cpuinfo if line.startswith("flags") for flag in line.split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.fixture(scope="module")
def cnn():
    """The project's CNN as exported for serving (fixture-trained), in float32 and in
    bfloat16, and 64 test images."""
    path = str(exported_versions()[0])
    images, _ = mnist_images("t10k")
    return (
        ServableModel(MODEL_NAME, 1, path),
        ServableModel(MODEL_NAME, 1, path, "bfloat16"),
        images[:64].reshape(64, -1).astype(np.uint8),
    )


def test_the_cnn_is_frozen_and_answers_within_bfloat16_rounding(cnn):
    float32, bfloat16, images = cnn
    assert float32.precision == "float32"
    assert bfloat16.precision == "frozen"
    # Frozen: no variable is left in the graph the session runs.
    ops = {op.type for op in bfloat16._runner._graph.get_operations()}
    assert not ops & {"VarHandleOp", "VariableV2", "ReadVariableOp"}, ops
    for name in ("predict_pixels_uint8", "serving_default", "classify"):
        signature = float32.signature(name)
        inputs = (
            {"images": images}
            if name == "predict_pixels_uint8"
            else {next(iter(signature.inputs)): _examples(images)}
        )
        want = float32.run(signature, inputs)
        got = bfloat16.run(bfloat16.signature(name), inputs)
        assert set(got) == set(want)
        scores = "probabilities" if "probabilities" in want else "scores"
        assert got[scores].shape == want[scores].shape == (64, 10)
        difference = np.abs(got[scores] - want[scores]).max()
        assert difference <= 0.02, f"{name}: probabilities moved by {difference}"
        np.testing.assert_array_equal(got[scores].argmax(1), want[scores].argmax(1))
        if cpu_has_bfloat16():
            assert difference > 0, f"{name}: answers are float32's bit for bit: pass not run"
        else:
            assert difference == 0


def _examples(images: np.ndarray) -> np.ndarray:
    from tests.serving_fixture import serialized_example

    return np.array([serialized_example(image.reshape(28, 28)) for image in images], object)


@pytest.mark.parametrize("kind", ["half_plus_two", "half_plus_two_tf2"])
def test_tf_serving_half_plus_two_gives_its_documented_answers(kind):
    # TF Serving's README and tensorflow_model_server_test.py: x = [1, 2, 5] gives
    # predictions [2.5, 3.0, 4.5]; each is exact in bfloat16 too. Both versions carry an
    # asset file (as TF Serving's do), so they keep their variables.
    model = ServableModel(kind, 123, str(tf_serving_models.built(kind)), "bfloat16")
    assert model.precision == "variables"
    signature = model.signature("serving_default")
    (key,) = signature.inputs
    outputs = model.run(signature, {key: np.array([[1.0], [2.0], [5.0]], np.float32)})
    (values,) = outputs.values()
    np.testing.assert_array_equal(values.reshape(-1), [2.5, 3.0, 4.5])


def test_tf_serving_mnist_example_keeps_its_variables_and_scores_alike(cnn):
    """TF Serving's MNIST example export (softmax regression, TF1): its class names come
    from a lookup table its main op fills, so it keeps its variables; its matrix
    product still runs in bfloat16."""
    path = str(tf_serving_models.built("mnist_example"))
    float32 = ServableModel("mnist_example", 1, path)
    bfloat16 = ServableModel("mnist_example", 1, path, "bfloat16")
    assert bfloat16.precision == "variables"
    images = cnn[2].astype(np.float32) / np.float32(255)
    want = float32.run(float32.signature("predict_images"), {"images": images})["scores"]
    got = bfloat16.run(bfloat16.signature("predict_images"), {"images": images})["scores"]
    assert got.shape == want.shape == (64, 10)
    difference = np.abs(got - want).max()
    assert difference <= 0.02
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    assert (difference > 0) == cpu_has_bfloat16()


def test_a_model_with_tables_and_assets_keeps_its_variables():
    """The vocabulary model fills a lookup table from an asset in its init op, which
    freezing would drop: it runs as TF Serving runs it, variables kept."""
    path = str(tf_serving_models.built("asset_vocabulary"))
    float32 = ServableModel("vocabulary", 1, path)
    bfloat16 = ServableModel("vocabulary", 1, path, "bfloat16")
    assert bfloat16.precision == "variables"
    for name, signature in float32.signatures.items():
        inputs = {
            key: np.array([b"a", b"b", b"zebra"], object)
            if info.is_string
            else np.zeros([3, *[d or 1 for d in (info.shape or [])[1:]]], info.numpy_dtype)
            for key, info in signature.inputs.items()
        }
        want = float32.run(signature, inputs)
        got = bfloat16.run(bfloat16.signature(name), inputs)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mixed precision 'float16': expected 'bfloat16'"):
        _Session._config("float16")


def test_the_server_serves_in_bfloat16_with_the_flag(tmp_path):
    """The command line end to end: the flag reaches every loaded version, whose
    answers over REST pick the classes the float32 model picks."""
    base = tmp_path / MODEL_NAME
    push(exported_versions()[0], base, 7)
    server = ServerProcess(
        tmp_path, "--model-base-path", str(base), "--mixed-precision", "bfloat16"
    )
    try:
        server.wait_serving([7])
        images, _ = mnist_images("t10k")
        response = requests.post(
            f"{server.url}/v1/models/{MODEL_NAME}:predict",
            json={
                "signature_name": "predict_pixels_uint8",
                "instances": images[:8].reshape(8, -1).tolist(),
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        got = np.array([row["probabilities"] for row in response.json()["predictions"]])
        float32 = ServableModel(MODEL_NAME, 7, str(base / "7"))
        want = float32.run(
            float32.signature("predict_pixels_uint8"),
            {"images": images[:8].reshape(8, -1).astype(np.uint8)},
        )["probabilities"]
        assert np.abs(got - want).max() <= 0.02
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
        assert f"serving {MODEL_NAME} version 7 (frozen)" in server.log()
        # The TF1 loader's deprecation notice (it says to use tf.saved_model.load, which
        # cannot run a SavedModel as TF Serving does) is not passed on to the log.
        assert "deprecated" not in server.log_path.read_text(errors="replace")
    finally:
        server.stop()


def test_a_bad_flag_value_is_one_argparse_error(capsys):
    from serving.server import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model-base-path", "x", "--mixed-precision", "fp16"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --mixed-precision: invalid choice: 'fp16' (choose from 'bfloat16')" in err
