"""The client and its ``predict`` command line against the shared test server: a PNG
file, a resized JPEG, an IDX file index and raw pixels, over REST and gRPC; the
printed class name and top-3 probabilities match a direct call of the model."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from serving import client
from tests.serving_fixture import (
    FIXTURE,
    MODEL_NAME,
    SHARED_VERSION,
    exported_versions,
    mnist_images,
    shared_server,
)


@pytest.fixture(scope="module")
def server():
    return shared_server()


@pytest.fixture(scope="module")
def direct():
    return tf.saved_model.load(str(exported_versions()[0]))


def expected_text(direct, image: np.ndarray) -> str:
    outputs = direct.signatures["predict_pixels_uint8"](images=tf.constant(image[None]))
    prediction = client.Prediction(
        SHARED_VERSION,
        int(outputs["classes"][0]),
        outputs["class_names"][0].numpy().decode(),
        outputs["probabilities"][0].numpy(),
    )
    return client.format_prediction(prediction, client.class_names_for(MODEL_NAME)) + "\n"


def ports(server, protocol: str) -> list[str]:
    port = server.rest_port if protocol == "rest" else server.grpc_port
    return ["--protocol", protocol, "--port", str(port)]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_predict_png_prints_class_and_top3(server, direct, tmp_path, capsys, protocol):
    image = mnist_images()[0][3]
    png = tmp_path / "digit.png"
    Image.fromarray(image).save(png)
    assert client.main(["--image", str(png), *ports(server, protocol)]) == 0
    printed = capsys.readouterr().out
    assert printed == expected_text(direct, image)
    assert printed.startswith("class: ")
    assert f"(version {SHARED_VERSION})" in printed.splitlines()[0]
    assert len(printed.splitlines()) == 5


def test_predict_idx_index_over_grpc(server, direct, capsys):
    images = mnist_images()[0]
    idx = FIXTURE / "t10k-images-idx3-ubyte.gz"
    assert client.main(["--idx", str(idx), "--index", "7", *ports(server, "grpc")]) == 0
    assert capsys.readouterr().out == expected_text(direct, images[7])


def test_predict_raw_pixels_with_label(server, direct, capsys):
    image = mnist_images()[0][5]
    pixels = ",".join(str(v) for v in image.reshape(-1))
    args = ["--pixels", pixels, "--label", "stable", *ports(server, "rest")]
    assert client.main(args) == 0
    assert capsys.readouterr().out == expected_text(direct, image)


def test_jpeg_of_other_size_is_converted_to_28x28_gray(tmp_path):
    """An RGB 56x56 JPEG becomes uint8 [28, 28]; --invert flips dark-on-light pictures."""
    picture = np.zeros((56, 56, 3), np.uint8)
    picture[10:46, 24:32] = 255
    path = tmp_path / "stroke.jpg"
    Image.fromarray(picture).save(path, quality=95)
    gray = client.image_from_file(path)
    assert (gray.dtype, gray.shape) == (np.uint8, (28, 28))
    assert gray[14, 14] > 200 and gray[0, 0] < 20
    inverted = client.image_from_file(path, invert=True)
    assert inverted[0, 0] > 235


def test_server_error_is_printed_with_exit_1(server, capsys):
    args = ["--pixels", ",".join(["0"] * 784), "--version", "7", *ports(server, "rest")]
    assert client.main(args) == 1
    assert capsys.readouterr().err == (
        "error: HTTP 404: Servable not found for request: Specific(mnist, 7); "
        f"serving versions: [{SHARED_VERSION}]\n"
    )
    args = ["--pixels", ",".join(["0"] * 784), "--model-name", "fashion", *ports(server, "grpc")]
    assert client.main(args) == 1
    assert capsys.readouterr().err == (
        "error: NOT_FOUND: Servable not found for request: Latest(fashion)\n"
    )


def test_bad_input_exits_2(capsys):
    assert client.main(["--pixels", "1,2,3"]) == 2
    assert (
        capsys.readouterr().err == "error: --pixels: expected 784 integers 0..255, got 3 values\n"
    )
    idx = FIXTURE / "t10k-images-idx3-ubyte.gz"
    assert client.main(["--idx", str(idx), "--index", "200"]) == 2
    assert "index 200 out of range, the file has 200 images" in capsys.readouterr().err


def test_help_of_both_commands(capsys):
    from serving import server

    for module in (client, server):
        with pytest.raises(SystemExit) as exited:
            module.main(["--help"])
        assert exited.value.code == 0
        assert "usage: mnist-tfx" in capsys.readouterr().out
