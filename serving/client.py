"""A client for TF Serving's REST and gRPC APIs (the embedded server or the real
one): reads one image from a PNG/JPEG file (Pillow, turned into 28x28 grayscale),
from an IDX file at an index, or from 784 raw pixel values, sends it as uint8
pixels to the ``predict_pixels_uint8`` signature, and prints the class name and
the top-3 probabilities. The ``predict`` command line (``mnist-tfx predict`` or
``python -m serving.client``) lives here too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGE_SIDE = 28
PIXEL_SIGNATURE = "predict_pixels_uint8"


class PredictError(Exception):
    """The server refused or failed the request; the text is what it said."""


@dataclass(frozen=True)
class Prediction:
    """The answer for one image."""

    model_version: int | None
    class_id: int
    class_name: str
    probabilities: np.ndarray

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(i), float(self.probabilities[i])) for i in order]


def image_from_file(path: Path, invert: bool = False) -> np.ndarray:
    """A PNG/JPEG (any size or mode) as uint8 [28, 28] grayscale; ``invert`` for dark-on-light
    pictures, since MNIST digits are light on dark."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        gray = opened.convert("L")
        if gray.size != (IMAGE_SIDE, IMAGE_SIDE):
            gray = gray.resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.LANCZOS)
        if invert:
            gray = ImageOps.invert(gray)
        return np.asarray(gray, dtype=np.uint8)


def image_from_idx(path: Path, index: int) -> np.ndarray:
    """Image ``index`` of an IDX images file (raw or .gz)."""
    from ingest.idx import read_idx_images

    images = read_idx_images(path)
    if not 0 <= index < len(images):
        raise ValueError(f"{path}: index {index} out of range, the file has {len(images)} images")
    return images[index]


def image_from_pixels(text: str) -> np.ndarray:
    """784 integers 0..255, separated by commas or spaces, row-major."""
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError("--pixels: expected 784 integers 0..255 separated by commas") from None
    if len(values) != IMAGE_SIDE * IMAGE_SIDE or not all(0 <= v <= 255 for v in values):
        raise ValueError(f"--pixels: expected 784 integers 0..255, got {len(values)} values")
    return np.array(values, np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)


def _model_path(model: str, version: int | None, label: str | None) -> str:
    if version is not None:
        return f"{model}/versions/{version}"
    if label:
        return f"{model}/labels/{label}"
    return model


def predict_rest(
    url: str,
    model: str,
    image: np.ndarray,
    version: int | None = None,
    label: str | None = None,
    timeout: float = 30.0,
) -> Prediction:
    """POST ``:predict`` in the row format; ``url`` like http://127.0.0.1:8501."""
    import requests

    response = requests.post(
        f"{url.rstrip('/')}/v1/models/{_model_path(model, version, label)}:predict",
        json={"signature_name": PIXEL_SIGNATURE, "instances": [image.tolist()]},
        timeout=timeout,
    )
    try:
        body = response.json()
    except ValueError:
        raise PredictError(f"HTTP {response.status_code}: {response.text[:200]}") from None
    if response.status_code != 200:
        raise PredictError(f"HTTP {response.status_code}: {body.get('error', body)}")
    answer = body["predictions"][0]
    served = response.headers.get("X-Model-Version")
    return Prediction(
        int(served) if served else None,
        int(answer["classes"]),
        answer["class_names"],
        np.array(answer["probabilities"], np.float32),
    )


def predict_grpc(
    target: str,
    model: str,
    image: np.ndarray,
    version: int | None = None,
    label: str | None = None,
    timeout: float = 30.0,
) -> Prediction:
    """PredictionService/Predict; ``target`` like 127.0.0.1:8500."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = PIXEL_SIGNATURE
    if version is not None:
        request.model_spec.version.value = version
    elif label:
        request.model_spec.version_label = label
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image[None].astype(np.uint8)))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise PredictError(f"{error.code().name}: {error.details()}") from None
    outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
    return Prediction(
        response.model_spec.version.value,
        int(outputs["classes"][0]),
        outputs["class_names"][0].decode(),
        outputs["probabilities"][0],
    )


def class_names_for(model: str) -> Sequence[str] | None:
    """The dataset's class names when the model is named after one (what the pipeline pushes)."""
    from ingest.datasets import get_dataset

    try:
        return get_dataset(model).class_names
    except (KeyError, ValueError):
        return None


def format_prediction(prediction: Prediction, names: Sequence[str] | None) -> str:
    def name(class_id: int) -> str:
        return names[class_id] if names else str(class_id)

    version = f" (version {prediction.model_version})" if prediction.model_version else ""
    lines = [f"class: {prediction.class_name} [{prediction.class_id}]{version}", "top 3:"]
    lines += [f"  {name(i):<12} [{i}] {p:.4f}" for i, p in prediction.top(3)]
    return "\n".join(lines)


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``predict`` options, shared by ``mnist-tfx predict`` and ``python -m serving.client``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="a PNG or JPEG file (any size, any mode)")
    source.add_argument("--idx", type=Path, help="an IDX images file (raw or .gz); see --index")
    source.add_argument("--pixels", help="784 integers 0..255, comma-separated, row-major")
    parser.add_argument("--index", type=int, default=0, help="with --idx: which image (default 0)")
    parser.add_argument(
        "--invert", action="store_true", help="with --image: for dark strokes on a light background"
    )
    parser.add_argument(
        "--protocol", choices=("rest", "grpc"), default="rest", help="default: rest"
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: 8501 for REST, 8500 for gRPC")
    parser.add_argument("--model-name", default="mnist", help="default: mnist")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int, help="a specific version (default: the latest)")
    choice.add_argument("--label", help="a version label, e.g. stable")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")


def run_predict(args: argparse.Namespace) -> int:
    """Print the prediction; 0 on success, 1 when the server refused, 2 on bad input."""
    try:
        if args.image is not None:
            image = image_from_file(args.image, args.invert)
        elif args.idx is not None:
            image = image_from_idx(args.idx, args.index)
        else:
            image = image_from_pixels(args.pixels)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if args.protocol == "rest":
            url = f"http://{args.host}:{args.port or 8501}"
            prediction = predict_rest(
                url, args.model_name, image, args.version, args.label, args.timeout
            )
        else:
            target = f"{args.host}:{args.port or 8500}"
            prediction = predict_grpc(
                target, args.model_name, image, args.version, args.label, args.timeout
            )
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: cannot reach the server: {error}", file=sys.stderr)
        return 1
    print(format_prediction(prediction, class_names_for(args.model_name)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-tfx predict",
        description="Classify one image with a served model over TF Serving's REST or gRPC API.",
    )
    add_predict_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_predict(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
