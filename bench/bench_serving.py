"""Serving benchmark (``make bench-serving``): the embedded TF-Serving-compatible
server against a direct in-process call of the same SavedModel (loaded and called as
the server's model thread calls it), in one run.

Measures single-image latency (p50 / p99 of sequential requests) over REST and
gRPC, and throughput (images/s, one image per request) with 1, 8 and 32
concurrent clients, with request batching on and off. Each client is a closed
loop: it sends one single-image request, waits for the reply, and sends the next.

Three kinds of process: this one (the direct call, then the orchestration), the
server (``python -m serving.server`` on free localhost ports, one per batching
mode), and the load generator (this file with ``--load-generator``, one process
per server, started after the server is up). The load generator runs every client
on one asyncio loop. REST clients each hold one keep-alive HTTP/1.1 connection and
write a prebuilt ``POST .../mnist:predict`` request (the JSON row format, built
once), then read the status line, headers and ``Content-Length`` body of the
reply; a reply other than 200 fails the run, and the first reply of each
connection must hold one prediction. gRPC clients share one ``grpc.aio`` channel
and call ``PredictionService.Predict`` with a prebuilt ``PredictRequest``, then a
second time as the REST clients call (``grpc, bytes``): the request serialized once,
sent as bytes, the reply's bytes not parsed (gRPC raises on a status other than OK;
the first reply is parsed and must hold one prediction). The
load generator shares the machine's cores with the server and the model, so its
own CPU time per request is reported next to the server's.

The Python gRPC client costs several times the REST client's CPU per request (both
run on the server's cores), so gRPC is also measured with nghttp2's ``h2load``, a C
HTTP/2 load generator (``make h2load`` installs Debian's nghttp2-client): the same
serialized ``PredictRequest`` in gRPC's length-prefixed framing, POSTed to
``/tensorflow.serving.PredictionService/Predict`` on one connection with as many
concurrent streams as clients, each stream sending its next request when the
previous reply is complete. h2load counts HTTP replies, and gRPC answers errors
with HTTP 200 too, so each run is checked against the server's own count of
Predict calls answered OK (``serving_requests_total``): any difference fails the
run. Its latency columns come from a one-stream run's per-request log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIGNATURE = "predict_pixels_uint8"
# Issue 16's targets: 32 clients with batching, REST >= 2,500 and gRPC >= 2,000 images/s,
# or either within 80 % of the direct batch-of-32 call; REST single-image p50 <= 2x direct.
TARGET_IMAGES_PER_S = {"rest": 2500, "grpc": 2000}
TARGET_DIRECT_FRACTION = 0.8
TARGET_P50_RATIO = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux), None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def direct_call(model_dir: Path, model_name: str):
    """The model called in process the way the server calls it (``ServableModel``: the
    SavedModel in a session, as TF Serving runs it): ``call(uint8 images) -> outputs``."""
    from serving.signatures import ServableModel

    servable = ServableModel(model_name, int(model_dir.name), str(model_dir))
    signature = servable.signature(SIGNATURE)
    return lambda images: servable.run(signature, {"images": images})


def bench_direct(call, image: np.ndarray, count: int) -> dict[str, object]:
    single = image[None]
    for _ in range(20):
        call(single)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call(single)
        times.append(time.perf_counter() - started)
    return {**percentiles(times), "batch32_images_per_s": direct_batch32(call, image)}


def direct_batch32(call, image: np.ndarray, seconds: float = 3.0) -> float:
    """Images/s of back-to-back batch-of-32 calls (numpy in, numpy out, as the server's
    model thread calls it). Measured before and after the servers: on a shared machine
    the reference moves with the load, and the servers are compared with its mean."""
    batch = np.repeat(image[None], 32, axis=0)
    call(batch)
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        call(batch)
        done += 32
    return done / (time.perf_counter() - started)


# --- the load generator (its own process) -------------------------------------------


class RestClient:
    """One keep-alive HTTP/1.1 connection sending the same prebuilt predict request."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self) -> None:
        first = self.writer is None
        if first:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *headers = head[:-4].split(b"\r\n")
        length = None
        for header in headers:
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"reply without Content-Length: {head!r}")
        body = await self.reader.readexactly(length)
        status = int(status_line.split(b" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        if first and len(json.loads(body)["predictions"]) != 1:
            raise RuntimeError(f"expected one prediction, got {body[:200]!r}")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


def rest_request(host: str, port: int, model: str, image: np.ndarray) -> bytes:
    body = json.dumps({"signature_name": SIGNATURE, "instances": [image.tolist()]}).encode()
    head = (
        f"POST /v1/models/{model}:predict HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def metrics_text(metrics_url: str) -> str:
    """The server's Prometheus page."""
    from urllib.request import urlopen

    with urlopen(metrics_url, timeout=10) as response:
        return response.read().decode()


def batch_totals(metrics_url: str) -> tuple[float, float]:
    """Rows and model calls the server has run so far (serving_batch_size sum, count)."""
    text = metrics_text(metrics_url)
    values = dict.fromkeys(("serving_batch_size_sum", "serving_batch_size_count"), 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in values:
            values[name] = float(value)
    return values["serving_batch_size_sum"], values["serving_batch_size_count"]


async def measure(calls, count: int, clients: tuple[int, ...], seconds: float, server) -> dict:
    """p50/p99 of ``count`` sequential calls on the first client, then for each number
    of clients the images/s of that many closed loops running for ``seconds``, with the
    mean rows per model call and the CPU milliseconds per request of this process and
    of the server. ``server`` is (pid, metrics URL)."""
    server_pid, metrics_url = server
    for _ in range(30):
        await calls[0]()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await calls[0]()
        times.append(time.perf_counter() - started)
    result: dict[str, object] = percentiles(times)
    for concurrency in clients:
        for call in calls[:concurrency]:
            await call()
        done = 0
        deadline = time.perf_counter() + seconds

        async def client(call, deadline: float = deadline) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await call()
                done += 1

        rows, runs = batch_totals(metrics_url)
        own_cpu, server_cpu = time.process_time(), process_cpu_seconds(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(client(call) for call in calls[:concurrency]))
        elapsed = time.perf_counter() - started
        server_cpu_after = process_cpu_seconds(server_pid)
        rows_after, runs_after = batch_totals(metrics_url)
        result[f"c{concurrency}_images_per_s"] = done / elapsed
        result[f"c{concurrency}_mean_batch"] = (rows_after - rows) / max(runs_after - runs, 1)
        result[f"c{concurrency}_client_cpu_ms"] = (time.process_time() - own_cpu) / done * 1000
        if server_cpu is not None and server_cpu_after is not None:
            result[f"c{concurrency}_server_cpu_ms"] = (server_cpu_after - server_cpu) / done * 1000
    return result


async def run_load(args: argparse.Namespace) -> dict[str, dict]:
    from ingest.idx import read_idx_images

    image = read_idx_images(REPO / "tests/fixtures/mnist/t10k-images-idx3-ubyte.gz")[0]
    most = max(args.clients)
    server = (args.server_pid, f"http://{args.host}:{args.rest_port}/monitoring/prometheus/metrics")
    results = {}
    request = rest_request(args.host, args.rest_port, args.model_name, image)
    rest_clients = [RestClient(args.host, args.rest_port, request) for _ in range(most)]
    try:
        calls = [client.call for client in rest_clients]
        results["rest"] = await measure(calls, args.requests, args.clients, args.seconds, server)
    finally:
        for client in rest_clients:
            await client.close()

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    predict = predict_request(args.model_name, image)
    channel = grpc.aio.insecure_channel(f"{args.host}:{args.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    async def grpc_call() -> None:
        response = await stub.Predict(predict, timeout=30)
        if response.outputs["probabilities"].tensor_shape.dim[0].size != 1:
            raise RuntimeError("expected one prediction")

    # The same call as the REST clients make theirs: the request serialized once, the
    # reply's bytes left unparsed (gRPC raises on any status but OK) after a first
    # reply checked in full. No serializers: the method takes and returns bytes.
    request_bytes = predict.SerializeToString()
    predict_bytes = channel.unary_unary(PREDICT_PATH)

    async def grpc_bytes_call() -> None:
        if not await predict_bytes(request_bytes, timeout=30):
            raise RuntimeError("empty PredictResponse")

    try:
        results["grpc"] = await measure(
            [grpc_call] * most, args.requests, args.clients, args.seconds, server
        )
        from tensorflow_serving.apis import predict_pb2

        first = predict_pb2.PredictResponse.FromString(
            await predict_bytes(request_bytes, timeout=30)
        )
        if first.outputs["probabilities"].tensor_shape.dim[0].size != 1:
            raise RuntimeError("expected one prediction")
        results["grpc_bytes"] = await measure(
            [grpc_bytes_call] * most, args.requests, args.clients, args.seconds, server
        )
    finally:
        await channel.close()
    return results


def predict_request(model: str, image: np.ndarray):
    """The PredictRequest every gRPC client sends: one uint8 image, packed bytes."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = model
    predict.model_spec.signature_name = SIGNATURE
    predict.inputs["images"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_UINT8,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (1, *image.shape)]
            ),
            tensor_content=image.tobytes(),
        )
    )
    return predict


# --- gRPC with h2load (a C HTTP/2 client) ---------------------------------------------

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: flag 0 (not compressed), 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def predicts_answered_ok(metrics_url: str, model: str) -> float:
    """The server's count of gRPC Predict calls answered OK for ``model`` so far."""
    text = metrics_text(metrics_url)
    wanted = ('api="grpc"', 'code="OK"', 'method="predict"', f'model="{model}"')
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("serving_requests_total{") and all(w in name for w in wanted):
            return float(value)
    return 0.0


_H2LOAD_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def h2load_counts(output: str) -> dict[str, float]:
    """h2load's summary: requests done / succeeded / failed / errored / timeout and the
    run's seconds; ValueError naming what is missing when the output has no summary."""
    import re

    finished = re.search(r"finished in ([\d.]+)(us|ms|s),", output)
    requests = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        output,
    )
    if finished is None or requests is None:
        raise ValueError(
            f"h2load printed no summary ('finished in', 'requests:'): {output[-500:]!r}"
        )
    started, done, succeeded, failed, errored, timeout = (int(v) for v in requests.groups()[1:])
    return {
        "seconds": float(finished.group(1)) * _H2LOAD_UNITS[finished.group(2)],
        "started": started,
        "done": done,
        "succeeded": succeeded,
        "failed": failed,
        "errored": errored,
        "timeout": timeout,
    }


class H2Load:
    """Runs h2load against one server's gRPC port with a prebuilt Predict body, and
    checks every run against the server's count of Predict calls answered OK."""

    def __init__(self, host: str, grpc_port: int, rest_port: int, model: str, body: Path) -> None:
        self.url = f"http://{host}:{grpc_port}{PREDICT_PATH}"
        self.metrics_url = f"http://{host}:{rest_port}/monitoring/prometheus/metrics"
        self.model = model
        self.body = body

    def run(
        self,
        streams: int,
        *,
        seconds: float | None = None,
        requests: int | None = None,
        log: Path | None = None,
    ) -> dict[str, float]:
        """One h2load run on one connection with ``streams`` concurrent streams, for
        ``seconds`` or ``requests``; its counts plus the CPU seconds h2load used.
        RuntimeError when any request failed or was not answered OK by the server."""
        import resource

        command = [
            "h2load", "-c", "1", "-m", str(streams),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-d", str(self.body),
        ]  # fmt: skip
        # h2load takes whole milliseconds ("500ms"), not fractions of seconds.
        command += (
            ["-D", f"{round(seconds * 1000)}ms"] if seconds is not None else ["-n", str(requests)]
        )
        if log is not None:
            command += ["--log-file", str(log)]
        answered = predicts_answered_ok(self.metrics_url, self.model)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command + [self.url], capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr[-500:]}")
        counts = h2load_counts(done.stdout)
        ok = predicts_answered_ok(self.metrics_url, self.model) - answered
        # A timed run stops counting at its deadline: the requests still in flight then
        # are answered (and counted by the server) but not counted as done by h2load.
        answered_all = counts["done"] <= ok <= counts["started"]
        if counts["failed"] or counts["errored"] or counts["timeout"] or not answered_all:
            raise RuntimeError(
                f"h2load: {counts['done']} requests done ({counts['failed']} failed, "
                f"{counts['errored']} errored, {counts['timeout']} timed out) but the server "
                f"answered {ok:.0f} Predict calls for model {self.model!r} with OK; expected "
                f"every request answered OK ({counts['done']} to {counts['started']})"
            )
        counts["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return counts


def measure_h2load(server: Server, args: argparse.Namespace, image: np.ndarray, work: Path) -> dict:
    """The gRPC row measured with h2load: p50/p99 of ``args.requests`` requests on one
    stream (from h2load's per-request log), then images/s, mean batch and CPU ms per
    request (server, h2load) at each number of concurrent streams."""
    body = work / "predict.grpc"
    body.write_bytes(grpc_frame(predict_request(args.model_name, image).SerializeToString()))
    load = H2Load("127.0.0.1", server.grpc_port, server.rest_port, args.model_name, body)
    load.run(1, requests=30)
    log = work / "h2load-latency.tsv"
    load.run(1, requests=args.requests, log=log)
    # Columns: start (us since the epoch), HTTP status, microseconds until the reply ended.
    micros = [int(line.split("\t")[2]) for line in log.read_text().splitlines() if line]
    result: dict[str, float] = percentiles([m / 1e6 for m in micros])
    for streams in args.clients:
        load.run(streams, requests=streams * 20)
        rows, runs = batch_totals(load.metrics_url)
        server_cpu = process_cpu_seconds(server.process.pid)
        counts = load.run(streams, seconds=args.seconds)
        server_cpu_after = process_cpu_seconds(server.process.pid)
        rows_after, runs_after = batch_totals(load.metrics_url)
        result[f"c{streams}_images_per_s"] = counts["done"] / counts["seconds"]
        result[f"c{streams}_mean_batch"] = (rows_after - rows) / max(runs_after - runs, 1)
        result[f"c{streams}_client_cpu_ms"] = counts["cpu_s"] / counts["done"] * 1000
        if server_cpu is not None and server_cpu_after is not None:
            result[f"c{streams}_server_cpu_ms"] = (
                (server_cpu_after - server_cpu) / counts["done"] * 1000
            )
    return result


# --- orchestration --------------------------------------------------------------------


class Server:
    def __init__(
        self,
        base_path: Path,
        model: str,
        batching: bool,
        log: Path,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.rest_port, self.grpc_port = free_port(), free_port()
        command = [
            sys.executable, "-m", "serving.server",
            "--model-name", model, "--model-base-path", str(base_path),
            "--rest-port", str(self.rest_port), "--grpc-port", str(self.grpc_port),
        ]  # fmt: skip
        if not batching:
            command.append("--no-batching")
        command += extra_args
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


def run_load_generator(server: Server, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--load-generator",
        "--model-name", args.model_name,
        "--rest-port", str(server.rest_port), "--grpc-port", str(server.grpc_port),
        "--server-pid", str(server.process.pid),
        "--requests", str(args.requests), "--seconds", str(args.seconds),
        "--clients", ",".join(str(c) for c in args.clients),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def latest_version(base_path: Path) -> Path:
    versions = sorted(
        (p for p in base_path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions:
        raise SystemExit(f"error: no pushed version under {base_path}; run `make run` first")
    return versions[-1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="LABEL=SERVER_FLAGS",
        help="also measure a batching server started with these extra `mnist-tfx serve` flags "
        "(repeatable), e.g. 'two-threads=--model-threads 2 --tf-intra-op-threads 1', in the "
        "same run as the default servers",
    )
    load = parser.add_argument_group("load generator process (started by the benchmark)")
    load.add_argument("--load-generator", action="store_true", help=argparse.SUPPRESS)
    load.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    load.add_argument("--rest-port", type=int, help=argparse.SUPPRESS)
    load.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    load.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    """``LABEL=FLAGS`` as the label and the server flags (shell-split)."""
    import shlex

    label, sep, flags = text.partition("=")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(
            f"--variant {text!r}: expected LABEL=SERVER_FLAGS, e.g. 'one=--model-threads 2'"
        )
    return label.strip(), tuple(shlex.split(flags))


def server_modes(variants) -> list[tuple[str, bool, tuple[str, ...]]]:
    """(figures key, batching, extra server flags) of every server one run measures."""
    modes = [("batching_on", True, ()), ("batching_off", False, ())]
    return modes + [(f"batching on, {label}", True, flags) for label, flags in variants]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_generator:
        print(json.dumps(asyncio.run(run_load(args))))
        return 0
    if not args.base_path.is_dir():
        raise SystemExit(f"error: {args.base_path} does not exist; run `make run` first")
    model_dir = latest_version(args.base_path)

    from ingest.idx import read_idx_images

    image = read_idx_images(REPO / "tests/fixtures/mnist/t10k-images-idx3-ubyte.gz")[0]
    figures: dict[str, object] = {
        "model": str(model_dir),
        "cpus": os.cpu_count(),
        "load_average_start": load_average(),
    }
    call = direct_call(model_dir, args.model_name)
    figures["direct"] = bench_direct(call, image, args.requests)
    figures["modes"] = []
    h2load = shutil.which("h2load")
    if h2load is None:
        figures["h2load_missing"] = True
    for index, (mode, batching, extra) in enumerate(server_modes(args.variant)):
        figures["modes"].append(mode)
        log = Path(f"/tmp/bench-serving-{index}.log")
        server = Server(args.base_path, args.model_name, batching, log, extra)
        try:
            server.wait()
            figures[mode] = run_load_generator(server, args)
            if h2load is not None:
                with tempfile.TemporaryDirectory(prefix="bench-serving-") as work:
                    figures[mode]["grpc_h2load"] = measure_h2load(server, args, image, Path(work))
        finally:
            server.stop()
    figures["direct"]["batch32_end_images_per_s"] = direct_batch32(call, image)
    figures["load_average_end"] = load_average()
    print(format_figures(figures, args.clients))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


API_LABELS = {
    "rest": "rest",
    "grpc": "grpc",
    "grpc_bytes": "grpc, bytes",
    "grpc_h2load": "grpc, h2load",
}
VERDICT_LABELS = {
    "rest": "REST",
    "grpc": "gRPC",
    "grpc_bytes": "gRPC with prebuilt bytes",
    "grpc_h2load": "gRPC with h2load",
}


def apis(rows: dict) -> list[str]:
    """The load generators a server was measured with, in table order."""
    return [api for api in API_LABELS if api in rows]


def format_figures(figures: dict, clients: tuple[int, ...]) -> str:
    direct = figures["direct"]
    most = max(clients)
    lines = [
        f"model: {figures['model']}",
        f"machine: {figures['cpus']} CPUs; load average (1/5/15 min) "
        f"{figures['load_average_start']} at the start, {figures['load_average_end']} at the end",
        "load generator: one separate process per server, every client on one asyncio loop; "
        "REST: a keep-alive HTTP/1.1 connection per client with a prebuilt JSON request; "
        "gRPC: grpc.aio, one channel, a PredictRequest message per call; gRPC, bytes: the "
        "same channel, the request serialized once and the reply's bytes unparsed, as the "
        "REST clients do; gRPC, h2load: nghttp2's C load generator, one "
        "connection with a stream per client, every reply checked against the server's "
        "count of Predict calls answered OK"
        + (" (h2load not installed: `make h2load`)" if figures.get("h2load_missing") else ""),
        f"direct call (in process, {SIGNATURE}, 1 image): p50 {direct['p50_ms']:.2f} ms, "
        f"p99 {direct['p99_ms']:.2f} ms; "
        f"batch of 32: {direct['batch32_images_per_s']:,.0f} images/s before the servers, "
        f"{direct.get('batch32_end_images_per_s', float('nan')):,.0f} after",
        "",
        "| server | API | p50 ms | p99 ms | p50 / direct | "
        + " | ".join(f"{c} client{'' if c == 1 else 's'} img/s" for c in clients)
        + f" | at {most}: mean batch, CPU ms/img server + load gen |",
        "|---|---|---|---|---|" + "---|" * len(clients) + "---|",
    ]
    modes = figures.get("modes", ["batching_on", "batching_off"])
    for mode in modes:
        for api in apis(figures[mode]):
            row = figures[mode][api]
            lines.append(
                f"| {mode.replace('_', ' ')} | {API_LABELS[api]} | {row['p50_ms']:.2f} | "
                f"{row['p99_ms']:.2f} | "
                f"{row['p50_ms'] / direct['p50_ms']:.2f}x | "
                + " | ".join(f"{row[f'c{c}_images_per_s']:,.0f}" for c in clients)
                + f" | {row[f'c{most}_mean_batch']:.1f}, "
                f"{row.get(f'c{most}_server_cpu_ms', float('nan')):.2f} + "
                f"{row[f'c{most}_client_cpu_ms']:.2f} |"
            )
    rest = figures["batching_on"]["rest"]
    reference = float(
        np.mean([direct["batch32_images_per_s"], direct.get("batch32_end_images_per_s", np.nan)])
    )
    if np.isnan(reference):
        reference = direct["batch32_images_per_s"]
    verdicts = []
    for mode in (m for m in modes if m != "batching_off"):
        for api in apis(figures[mode]):
            rate = figures[mode][api][f"c{most}_images_per_s"]
            target = TARGET_IMAGES_PER_S[api.partition("_")[0]]
            met = rate >= target or rate >= TARGET_DIRECT_FRACTION * reference
            prefix = "" if mode == "batching_on" else f"{mode}: "
            verdicts.append(
                f"{prefix}{VERDICT_LABELS[api]} "
                f"{rate:,.0f} (>= {target:,}, or {rate / reference:.0%} of "
                f"direct batch-of-32 >= {TARGET_DIRECT_FRACTION:.0%}) -> "
                + ("met" if met else "NOT met")
            )
    cpu_ms = rest.get(f"c{most}_server_cpu_ms", float("nan")) + rest[f"c{most}_client_cpu_ms"]
    lines += [
        "",
        f"REST, batching on, {most} clients: {cpu_ms:.2f} CPU ms per image (server + load "
        f"generator), so {figures['cpus']} otherwise idle CPUs could answer at most "
        f"{figures['cpus'] * 1000 / cpu_ms:,.0f} images/s (a bound from the measured CPU "
        "time, not a measurement)",
        f"target: {most} clients with batching (direct batch-of-32 mean {reference:,.0f} "
        "images/s): " + "; ".join(verdicts),
        f"target: REST single-image p50 <= {TARGET_P50_RATIO:g}x the direct call: "
        f"{rest['p50_ms'] / direct['p50_ms']:.2f}x -> "
        + ("met" if rest["p50_ms"] <= TARGET_P50_RATIO * direct["p50_ms"] else "NOT met"),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
