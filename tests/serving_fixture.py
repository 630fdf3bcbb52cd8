"""Real model versions for the serving tests (``tests/serving/``).

``exported_versions()`` builds, once per test process, a real Transform output
(``preprocessing_fn`` analysed by tensorflow_transform on Beam), trains the CNN a
few steps twice with different seeds on MNIST fixture images, and exports both
with ``trainer.export``. ``push()`` publishes one into a base path the way the
Pusher does; ``ServerProcess`` runs ``python -m serving.server`` on free localhost
ports. The ``tests/serving/`` modules import these.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tf_keras as keras

from ingest.convert import image_to_example
from ingest.datasets import get_dataset
from ingest.idx import read_idx_pair
from serving.publish import publish_saved_model
from tests.transform_fixture import build_transform_output
from trainer.export import export_serving_model
from trainer.hparams import HParams
from trainer.model import build_model
from trainer.model_fn import IMAGE_KEY, cnn_model_fn

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "mnist"
MODEL_NAME = "mnist"
CLASS_NAMES = get_dataset("mnist").class_names
_built: dict[str, object] = {}


def mnist_images(split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """Fixture images uint8 [n, 28, 28] and labels (t10k: 200, train: 300)."""
    return read_idx_pair(
        FIXTURE / f"{split}-images-idx3-ubyte.gz", FIXTURE / f"{split}-labels-idx1-ubyte.gz"
    )


def serialized_example(image: np.ndarray, label: int = 0) -> bytes:
    return image_to_example(image, int(label)).SerializeToString()


def exported_versions() -> list[Path]:
    """Two exported SavedModels (seeds 0 and 1, 10 steps of 20 MNIST fixture images each)."""
    if "paths" not in _built:
        root = Path(tempfile.mkdtemp(prefix="serving-models-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        images, labels = mnist_images("train")
        tft_output = build_transform_output(root, images, labels)
        paths = []
        for seed in (0, 1):
            keras.utils.set_random_seed(seed)
            model = build_model(cnn_model_fn, HParams().to_params())
            model.fit(
                {IMAGE_KEY: images[:200].astype(np.float32)[..., None] / np.float32(255)},
                labels[:200].astype(np.int64),
                batch_size=20,
                epochs=1,
                verbose=0,
            )
            path = root / f"export-seed{seed}"
            # With the verification set and TF Serving's warm-up file, as the Trainer
            # writes them, so every served version replays its warm-up requests.
            eval_images, eval_labels = mnist_images("t10k")
            warmup = [
                serialized_example(image, int(label))
                for image, label in zip(eval_images[:16], eval_labels[:16], strict=True)
            ]
            export_serving_model(model, tft_output, str(path), CLASS_NAMES, warmup)
            paths.append(path)
        _built["paths"] = paths
    return _built["paths"]


def push(export_dir: Path, base_path: Path, version: int) -> int:
    """Publish like the Pusher (hidden name, then rename), as exactly ``version``."""
    pushed, _ = publish_saved_model(export_dir, base_path, now=version)
    assert pushed == version
    return pushed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m serving.server`` in a subprocess on free localhost ports."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        self.rest_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_dir / f"server-{self.rest_port}.log"
        command = [
            sys.executable, "-m", "serving.server", "--verbose",
            "--rest-port", str(self.rest_port), "--grpc-port", str(self.grpc_port),
            "--poll-seconds", "0.2", *args,
        ]  # fmt: skip
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            command, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_until(self, predicate, timeout: float = 120.0, what: str = "ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if predicate():
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        pytest.fail(f"server not {what} after {timeout} s:\n{self.log()}")

    def serving_versions(self, model: str = MODEL_NAME) -> list[int]:
        response = requests.get(f"{self.url}/healthz", timeout=5)
        return response.json()["serving_versions"].get(model, [])

    def wait_serving(self, versions: list[int], model: str = MODEL_NAME) -> None:
        self.wait_until(
            lambda: self.serving_versions(model) == versions, what=f"serving {versions}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


SHARED_VERSION = 100
SHARED_MAX_REQUEST_BYTES = 200_000


def shared_server() -> ServerProcess:
    """One server for the read-only tests of every module (REST, gRPC, client), started once
    per test process: version SHARED_VERSION of the seed-0 model, labelled ``stable``,
    requests limited to SHARED_MAX_REQUEST_BYTES."""
    if "server" not in _built:
        root = Path(tempfile.mkdtemp(prefix="serving-shared-"))
        push(exported_versions()[0], root / MODEL_NAME, SHARED_VERSION)
        process = ServerProcess(
            root,
            "--model-base-path", str(root / MODEL_NAME),
            "--label", f"stable={SHARED_VERSION}",
            "--max-request-bytes", str(SHARED_MAX_REQUEST_BYTES),
        )  # fmt: skip
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        atexit.register(process.stop)
        process.wait_serving([SHARED_VERSION])
        _built["server"] = process
    return _built["server"]
