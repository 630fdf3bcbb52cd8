"""Serving benchmark (``make bench-serving``): the embedded TF-Serving-compatible
server against a direct in-process call of the same SavedModel, in one run.

Measures single-image latency (p50 / p99 of sequential requests) over REST and
gRPC, and throughput (images/s, one image per request) with 1, 8 and 32
concurrent clients, with request batching on and off. The server runs in a
subprocess on free localhost ports; the clients run on one asyncio loop in this
process (aiohttp and grpc.aio), each request body built once beforehand. The
machine's cores are shared by the clients, the server and the model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIGNATURE = "predict_images_uint8"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


def bench_direct(model_dir: Path, image: np.ndarray, count: int) -> dict[str, object]:
    import tensorflow as tf

    function = tf.saved_model.load(str(model_dir)).signatures[SIGNATURE]
    single = tf.constant(image[None])
    for _ in range(20):
        function(images=single)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        {k: v.numpy() for k, v in function(images=single).items()}
        times.append(time.perf_counter() - started)
    batch = tf.constant(np.repeat(image[None], 32, axis=0))
    function(images=batch)
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < 3:
        {k: v.numpy() for k, v in function(images=batch).items()}
        done += 32
    return {**percentiles(times), "batch32_images_per_s": done / (time.perf_counter() - started)}


class Server:
    def __init__(self, base_path: Path, model: str, batching: bool, log: Path) -> None:
        self.rest_port, self.grpc_port = free_port(), free_port()
        command = [
            sys.executable, "-m", "serving.server",
            "--model-name", model, "--model-base-path", str(base_path),
            "--rest-port", str(self.rest_port), "--grpc-port", str(self.grpc_port),
        ]  # fmt: skip
        if not batching:
            command.append("--no-batching")
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.rest_port}"

    def wait(self, timeout: float = 180) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not load the model in time")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


async def rest_session(server: Server, model: str, image: np.ndarray):
    import aiohttp

    body = json.dumps({"signature_name": SIGNATURE, "instances": [image.tolist()]}).encode()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64), headers={"Content-Type": "application/json"}
    )
    url = f"{server.url}/v1/models/{model}:predict"

    async def call() -> None:
        async with session.post(url, data=body) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")

    return session, call


async def grpc_session(server: Server, model: str, image: np.ndarray):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = SIGNATURE
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image[None]))

    async def call() -> None:
        await stub.Predict(request, timeout=30)

    return channel, call


async def measure(call, count: int, clients: tuple[int, ...], seconds: float) -> dict:
    for _ in range(30):
        await call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    result: dict[str, object] = percentiles(times)
    for concurrency in clients:
        done = 0
        deadline = time.perf_counter() + seconds

        async def client(until: float) -> None:
            nonlocal done
            while time.perf_counter() < until:
                await call()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(deadline) for _ in range(concurrency)))
        result[f"c{concurrency}_images_per_s"] = done / (time.perf_counter() - started)
    return result


async def bench_server(server: Server, model: str, image: np.ndarray, args) -> dict:
    results = {}
    session, call = await rest_session(server, model, image)
    try:
        results["rest"] = await measure(call, args.requests, args.clients, args.seconds)
    finally:
        await session.close()
    channel, call = await grpc_session(server, model, image)
    try:
        results["grpc"] = await measure(call, args.requests, args.clients, args.seconds)
    finally:
        await channel.close()
    return results


def latest_version(base_path: Path) -> Path:
    versions = sorted(
        (p for p in base_path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions:
        raise SystemExit(f"error: no pushed version under {base_path}; run `make run` first")
    return versions[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-path",
        type=Path,
        default=Path("tfx_output/serving/mnist"),
        help="pushed model base path (default tfx_output/serving/mnist)",
    )
    parser.add_argument("--model-name", default="mnist")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for p50/p99")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput point")
    parser.add_argument(
        "--clients", type=lambda t: tuple(int(v) for v in t.split(",")), default=(1, 8, 32)
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not args.base_path.is_dir():
        raise SystemExit(f"error: {args.base_path} does not exist; run `make run` first")
    model_dir = latest_version(args.base_path)

    from components.idx import read_idx_images

    image = read_idx_images(REPO / "tests/fixtures/mnist/t10k-images-idx3-ubyte.gz")[0]
    figures: dict[str, object] = {"model": str(model_dir)}
    figures["direct"] = bench_direct(model_dir, image, args.requests)
    for batching in (True, False):
        server = Server(
            args.base_path, args.model_name, batching, Path(f"/tmp/bench-serving-{batching}.log")
        )
        try:
            server.wait()
            figures["batching_on" if batching else "batching_off"] = asyncio.run(
                bench_server(server, args.model_name, image, args)
            )
        finally:
            server.stop()
    print(format_figures(figures, args.clients))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def format_figures(figures: dict, clients: tuple[int, ...]) -> str:
    direct = figures["direct"]
    lines = [
        f"model: {figures['model']}",
        f"direct call (in process, {SIGNATURE}, 1 image): p50 {direct['p50_ms']:.2f} ms, "
        f"p99 {direct['p99_ms']:.2f} ms; "
        f"batch of 32: {direct['batch32_images_per_s']:,.0f} images/s",
        "",
        "| server | API | p50 ms | p99 ms | p50 / direct | "
        + " | ".join(f"{c} clients img/s" for c in clients)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(clients),
    ]
    for mode in ("batching_on", "batching_off"):
        for api in ("rest", "grpc"):
            row = figures[mode][api]
            lines.append(
                f"| {mode.replace('_', ' ')} | {api} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['p50_ms'] / direct['p50_ms']:.2f}x | "
                + " | ".join(f"{row[f'c{c}_images_per_s']:,.0f}" for c in clients)
                + " |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
