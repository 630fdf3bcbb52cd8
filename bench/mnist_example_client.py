"""TF Serving's MNIST example client against our pushed model (``make bench-mnist-client``).

Does what ``tensorflow_serving/example/mnist_client.py`` does, written anew for this
project: for each MNIST test image, a gRPC ``PredictionService/Predict`` request for
model ``mnist``, signature ``predict_images``, input ``images`` = float32 [1, 784]
pixels in [0, 1] (uint8 / 255, as the example's ``mnist_input_data`` makes them,
packed with ``tf.make_tensor_proto(image, shape=[1, image.size])``); at most
``--concurrency`` requests in flight (asynchronous calls whose done-callbacks feed a
result counter); the argmax of ``outputs['scores'].float_val`` compared with the
label; and the inference error rate printed at the end. A failed request counts as an
error, as in the example.

Without ``--server`` it starts the embedded server (``python -m serving.server``) on
the newest version under ``--base-path`` (``make run`` pushes to
``tfx_output/serving/mnist``) on free localhost ports, and also prints the model's own
error rate through ``serving_default`` on the same images (the version loaded in this
process), which the client's must equal. ``tests/serving/test_mnist_example_client.py``
runs ``do_inference`` on the 200 fixture images.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: python bench/mnist_example_client.py
    sys.path.insert(0, str(REPO))

SIGNATURE = "predict_images"
INPUT_KEY = "images"
OUTPUT_KEY = "scores"
# The example's own limit and per-request deadline.
MAX_TESTS = 10_000
DEFAULT_TIMEOUT_S = 5.0


def example_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 [n, 28, 28] images as ``mnist_input_data`` hands them to the example client:
    float32 [n, 784] in [0, 1]."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    return np.multiply(flat, 1.0 / 255.0)


class ResultCounter:
    """Counts finished and wrong answers and throttles the requests in flight; keeps each
    answer's scores (NaN for a failed request) and each failure's text."""

    def __init__(self, num_tests: int, concurrency: int) -> None:
        self.num_tests = num_tests
        self.concurrency = concurrency
        self.errors = 0
        self.done = 0
        self.active = 0
        self.scores = np.full((num_tests, 10), np.nan, np.float32)
        self.failures: list[str] = []
        self._condition = threading.Condition()

    def throttle(self) -> None:
        """Wait for a free slot, then take it."""
        with self._condition:
            while self.active >= self.concurrency:
                self._condition.wait()
            self.active += 1

    def finish(self, index: int, scores: np.ndarray | None, wrong: bool, failure: str = "") -> None:
        with self._condition:
            if scores is not None and scores.shape == (10,):
                self.scores[index] = scores
            if failure:
                self.failures.append(f"image {index}: {failure}")
            self.errors += int(wrong)
            self.done += 1
            self.active -= 1
            self._condition.notify_all()

    def error_rate(self) -> float:
        """Once every request has finished: wrong or failed answers / requests."""
        with self._condition:
            while self.done < self.num_tests:
                self._condition.wait()
            return self.errors / self.num_tests


@dataclass(frozen=True)
class InferenceResult:
    error_rate: float
    scores: np.ndarray  # float32 [n, 10], NaN rows for failed requests
    failures: list[str]


def do_inference(
    target: str,
    images: np.ndarray,
    labels: np.ndarray,
    concurrency: int = 1,
    model_name: str = "mnist",
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool = False,
) -> InferenceResult:
    """One Predict request per image on ``target`` (host:port), at most ``concurrency``
    at a time; the error rate of the argmax of the returned scores against ``labels``."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    pixels = example_pixels(images)
    counter = ResultCounter(len(pixels), concurrency)

    def callback(index: int, label: int):
        def done(future) -> None:
            scores, failure = None, ""
            try:
                error = future.exception()
                if error is not None:
                    code = error.code().name if hasattr(error, "code") else type(error).__name__
                    details = error.details() if hasattr(error, "details") else str(error)
                    failure = f"{code}: {details}"
                else:
                    values = future.result().outputs[OUTPUT_KEY].float_val
                    scores = np.array(values, np.float32)
                    if scores.shape != (10,):
                        scores, failure = None, f"{len(values)} scores, expected 10"
            except Exception as error:  # noqa: BLE001 - every request must be counted
                scores, failure = None, f"{type(error).__name__}: {error}"
            wrong = scores is None or int(np.argmax(scores)) != label
            counter.finish(index, scores, wrong, failure)
            if progress:
                sys.stdout.write("." if not failure else "E")
                sys.stdout.flush()

        return done

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = SIGNATURE
            request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(image, shape=[1, image.size]))
            counter.throttle()
            future = stub.Predict.future(request, timeout)
            future.add_done_callback(callback(index, int(label)))
        error_rate = counter.error_rate()
    return InferenceResult(error_rate, counter.scores, counter.failures)


def serving_default_error_rate(model_dir: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """The model's own error rate on the same images: ``serving_default`` on serialized
    tf.Examples, called in this process on the served version."""
    import tensorflow as tf

    from ingest.convert import image_to_example

    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    wrong = 0
    for start in range(0, len(images), 500):
        batch = [
            image_to_example(image, int(label)).SerializeToString()
            for image, label in zip(
                images[start : start + 500], labels[start : start + 500], strict=True
            )
        ]
        classes = serve(examples=tf.constant(batch))["classes"].numpy()
        wrong += int(np.sum(classes != labels[start : start + 500]))
    return wrong / len(images)


def read_test_set(data_dir: Path, dataset: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """The dataset's test images and labels from DATA_DIR/raw/DATASET (``mnist-tfx fetch``)."""
    from ingest.fetch import find_idx_files
    from ingest.idx import read_idx_pair

    files = find_idx_files(data_dir / "raw" / dataset, dataset)
    return read_idx_pair(files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"])


def latest_version(base_path: Path) -> Path:
    versions = sorted(
        (p for p in base_path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions:
        raise SystemExit(f"error: no pushed version under {base_path}; run `make run` first")
    return versions[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base_path: Path, model_name: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``python -m serving.server`` on the base path; returns it and its gRPC target once
    ``/healthz`` says it serves."""
    import requests

    rest_port, grpc_port = _free_port(), _free_port()
    command = [
        sys.executable, "-m", "serving.server",
        "--model-name", model_name, "--model-base-path", str(base_path),
        "--rest-port", str(rest_port), "--grpc-port", str(grpc_port),
    ]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"error: the server exited with {process.returncode}; see {log}")
        try:
            if requests.get(f"http://127.0.0.1:{rest_port}/healthz", timeout=2).ok:
                return process, f"127.0.0.1:{grpc_port}"
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"error: the server did not load {base_path} in 180 s; see {log}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", help="PredictionService host:port; default: start the embedded server"
    )
    parser.add_argument(
        "--base-path",
        type=Path,
        default=Path("tfx_output/serving/mnist"),
        help="pushed model base path (default tfx_output/serving/mnist)",
    )
    parser.add_argument("--model-name", default="mnist")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="default ./data")
    parser.add_argument("--num-tests", type=int, default=MAX_TESTS, help="default 10000")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per request")
    args = parser.parse_args(argv)
    if not 0 < args.num_tests <= MAX_TESTS:
        parser.error(f"--num-tests must be 1..{MAX_TESTS}")
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images, labels = read_test_set(args.data_dir)
    images, labels = images[: args.num_tests], labels[: args.num_tests].astype(np.int64)
    model_dir = latest_version(args.base_path) if args.base_path.is_dir() else None
    server = None
    target = args.server
    if target is None:
        if model_dir is None:
            raise SystemExit(f"error: {args.base_path} does not exist; run `make run` first")
        server, target = start_server(
            args.base_path, args.model_name, Path("/tmp/mnist-client.log")
        )
    try:
        started = time.perf_counter()
        result = do_inference(
            target, images, labels, args.concurrency, args.model_name, args.timeout
        )
        seconds = time.perf_counter() - started
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    for failure in result.failures[:5]:
        print(f"failed: {failure}")
    print(
        f"{len(images)} test images, {args.concurrency} in flight, {seconds:.1f} s; "
        f"{len(result.failures)} requests failed"
    )
    print(f"Inference error rate: {result.error_rate * 100:.2f}%")
    if model_dir is not None:
        own = serving_default_error_rate(model_dir, images, labels)
        print(
            f"serving_default error rate of {model_dir} on the same images: {own * 100:.2f}% "
            + ("(equal)" if own == result.error_rate else "(DIFFERENT)")
        )
        if own != result.error_rate:
            return 1
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
