"""The embedded TF-Serving-compatible server: its settings, the wiring of the
version watcher, batcher, REST (aiohttp) and gRPC (grpc.aio) servers on one
asyncio loop, and the ``serve`` command line (``mnist-tfx serve``, or
``python -m serving.server``). Model versions run on a small pool of model threads;
TensorFlow releases the GIL while it computes, so the loop keeps answering.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from serving.batching import (  # noqa: E402
    DEFAULT_BATCH_THREADS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_ENQUEUED_BATCHES,
    DEFAULT_TIMEOUT_S,
    BatchingConfig,
)
from serving.versions import ModelConfig, VersionPolicy  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_REST_PORT = 8501
DEFAULT_GRPC_PORT = 8500
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Everything one server needs; by default it listens on localhost only."""

    models: tuple[ModelConfig, ...]
    host: str = "127.0.0.1"
    rest_port: int = DEFAULT_REST_PORT
    grpc_port: int | None = DEFAULT_GRPC_PORT
    poll_seconds: float = 1.0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # None: DEFAULT_BATCH_THREADS with batching; without, one per core, so requests
    # run side by side as TF Serving runs them on its request threads.
    model_threads: int | None = None
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    # TensorFlow's own thread pools (TF Serving's --tensorflow_intra_op_parallelism and
    # --tensorflow_inter_op_parallelism); 0 lets TensorFlow choose.
    intra_op_threads: int = 0
    inter_op_threads: int = 0

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("configure at least one model")
        if self.poll_seconds <= 0:
            raise ValueError(f"poll interval must be > 0 seconds, got {self.poll_seconds}")
        if self.max_request_bytes < 1024:
            raise ValueError(
                f"max request size must be >= 1024 bytes, got {self.max_request_bytes}"
            )
        if self.model_threads is not None and self.model_threads < 1:
            raise ValueError(f"model threads must be >= 1, got {self.model_threads}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError(
                "TensorFlow thread counts must be >= 0 (0: TensorFlow's choice), got "
                f"intra-op {self.intra_op_threads}, inter-op {self.inter_op_threads}"
            )

    @property
    def threads(self) -> int:
        """How many model threads run: the setting, else the default for the mode."""
        if self.model_threads is not None:
            return self.model_threads
        return DEFAULT_BATCH_THREADS if self.batching.enabled else (os.cpu_count() or 1)


async def serve(config: ServerConfig, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT / SIGTERM when none is given)."""
    import grpc
    from aiohttp import web

    from serving.batching import Batcher
    from serving.grpc_api import add_services
    from serving.metrics import ServingMetrics
    from serving.rest_api import RestApi
    from serving.service import InferenceService
    from serving.versions import ModelRegistry

    if config.intra_op_threads or config.inter_op_threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(config.intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.inter_op_threads)
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    models = ModelRegistry(config.models, config.poll_seconds)
    metrics = ServingMetrics(models)
    executor = ThreadPoolExecutor(config.threads, thread_name_prefix="model")
    batcher = Batcher(
        executor, config.threads, config.batching, on_batch=metrics.batch_size.observe
    )
    service = InferenceService(models, batcher)

    runner = web.AppRunner(
        RestApi(service, metrics, config.max_request_bytes).app(), access_log=None
    )
    await runner.setup()
    await web.TCPSite(runner, config.host, config.rest_port).start()
    logger.info("REST API on http://%s:%d/v1/models", config.host, config.rest_port)
    grpc_server = None
    if config.grpc_port is not None:
        grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_request_bytes),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        add_services(grpc_server, service, metrics)
        grpc_server.add_insecure_port(f"{config.host}:{config.grpc_port}")
        await grpc_server.start()
        logger.info("gRPC API on %s:%d", config.host, config.grpc_port)
    models.start()
    try:
        await stop.wait()
    finally:
        logger.info("shutting down")
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        await runner.cleanup()
        models.stop()
        executor.shutdown(wait=False)


def _version_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _label(text: str) -> tuple[str, int]:
    name, sep, version = text.partition("=")
    if not sep or not name or not version.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"expected LABEL=VERSION, e.g. stable=1700000000, got {text!r}"
        )
    return name, int(version)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` options, shared by ``mnist-tfx serve`` and ``python -m serving.server``."""
    _add_model_source_arguments(parser)
    _add_version_arguments(parser)
    _add_network_arguments(parser)
    _add_batching_arguments(parser)
    _add_thread_arguments(parser)


def _add_model_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model is served and from where."""
    parser.add_argument(
        "--dataset",
        choices=("mnist", "fashion_mnist"),
        default="mnist",
        help="default model: name DATASET, base path OUTPUT_ROOT/serving/DATASET (default mnist)",
    )
    parser.add_argument(
        "--output-root", type=Path, default=Path("tfx_output"), help="default: ./tfx_output"
    )
    parser.add_argument("--model-name", help="model name in URLs and gRPC (default: the dataset)")
    parser.add_argument(
        "--model-base-path",
        type=Path,
        help="directory holding integer version directories "
        "(default: OUTPUT_ROOT/serving/<model name>)",
    )
    parser.add_argument(
        "--model-config-file",
        type=Path,
        help="TF Serving models.config (ModelServerConfig text proto) naming one or more "
        "models; replaces the model options above",
    )


def _add_version_arguments(parser: argparse.ArgumentParser) -> None:
    """Which of the model's versions are served, and their labels."""
    parser.add_argument(
        "--version-policy",
        choices=("latest", "all", "specific"),
        default="latest",
        help="which versions to serve (default latest)",
    )
    parser.add_argument(
        "--num-latest", type=int, default=1, help="with --version-policy latest (default 1)"
    )
    parser.add_argument(
        "--versions",
        type=_version_list,
        default=(),
        help="with --version-policy specific: comma-separated versions",
    )
    parser.add_argument(
        "--label",
        type=_label,
        action="append",
        default=[],
        metavar="LABEL=VERSION",
        help="version label, e.g. --label stable=1700000000 (repeatable)",
    )


def _add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """Address and ports, how often to look for versions, and the request size limit."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--rest-port", type=int, default=DEFAULT_REST_PORT, help="default 8501 (TF Serving's)"
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=DEFAULT_GRPC_PORT,
        help="default 8500 (TF Serving's); 0 turns gRPC off",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=1.0,
        help="how often to look for new versions (default 1)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"largest request body accepted (default {DEFAULT_MAX_REQUEST_BYTES})",
    )


def _add_batching_arguments(parser: argparse.ArgumentParser) -> None:
    """How concurrent requests are joined into batches (``BatchingConfig``)."""
    parser.add_argument(
        "--no-batching",
        action="store_true",
        help="run every request on its own (default: join concurrent requests)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"rows per joined call (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=DEFAULT_TIMEOUT_S * 1000,
        help="longest a batch waits for more rows while a model thread is free "
        f"(default {DEFAULT_TIMEOUT_S * 1000:g}: run at once; while every model thread is "
        "busy, batches fill regardless)",
    )
    parser.add_argument(
        "--max-enqueued-batches",
        type=int,
        default=DEFAULT_MAX_ENQUEUED_BATCHES,
        help="full batches allowed to wait for a model thread before requests get 503 "
        f"(default {DEFAULT_MAX_ENQUEUED_BATCHES})",
    )


def _add_thread_arguments(parser: argparse.ArgumentParser) -> None:
    """The model threads and TensorFlow's own thread pools."""
    parser.add_argument(
        "--model-threads",
        type=int,
        help="threads running the model, each taking one batch at a time; TensorFlow "
        "spreads each call over the cores itself (default: "
        f"{DEFAULT_BATCH_THREADS} with batching, one per core without)",
    )
    parser.add_argument(
        "--tf-intra-op-threads",
        type=int,
        default=0,
        help="threads one TensorFlow op may use (default 0: TensorFlow's choice)",
    )
    parser.add_argument(
        "--tf-inter-op-threads",
        type=int,
        default=0,
        help="TensorFlow ops run side by side (default 0: TensorFlow's choice)",
    )


def model_configs_from_file(path: Path) -> tuple[ModelConfig, ...]:
    """ModelConfigs from a TF Serving ``models.config`` (ModelServerConfig text format)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(path.read_text(encoding="utf-8"), config)
    configs = []
    for model in config.model_config_list.config:
        proto_policy = model.model_version_policy
        choice = proto_policy.WhichOneof("policy_choice")
        if choice == "all":
            policy = VersionPolicy("all")
        elif choice == "specific":
            policy = VersionPolicy("specific", versions=tuple(proto_policy.specific.versions))
        elif choice == "latest":
            policy = VersionPolicy("latest", num_latest=proto_policy.latest.num_versions or 1)
        else:
            policy = VersionPolicy()
        configs.append(
            ModelConfig(model.name, Path(model.base_path), policy, dict(model.version_labels))
        )
    if not configs:
        raise ValueError(f"{path}: model_config_list names no model")
    return tuple(configs)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if args.model_config_file:
        models = model_configs_from_file(args.model_config_file)
    else:
        name = args.model_name or args.dataset
        base_path = args.model_base_path or args.output_root / "serving" / name
        policy = VersionPolicy(args.version_policy, args.num_latest, tuple(args.versions))
        models = (ModelConfig(name, base_path, policy, dict(args.label)),)
    return ServerConfig(
        models=models,
        host=args.host,
        rest_port=args.rest_port,
        grpc_port=args.grpc_port or None,
        poll_seconds=args.poll_seconds,
        max_request_bytes=args.max_request_bytes,
        model_threads=args.model_threads,
        intra_op_threads=args.tf_intra_op_threads,
        inter_op_threads=args.tf_inter_op_threads,
        batching=BatchingConfig(
            enabled=not args.no_batching,
            max_batch_size=args.max_batch_size,
            timeout_s=args.batch_timeout_ms / 1000.0,
            max_enqueued_batches=args.max_enqueued_batches,
        ),
    )


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted; 0 on a clean stop, 2 on a bad configuration."""
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for model in config.models:
        print(
            f"serving model {model.name} from {model.base_path} "
            f"(policy {model.policy.kind}, labels {model.labels or 'none'})"
        )
    grpc_text = f", gRPC {config.host}:{config.grpc_port}" if config.grpc_port else ""
    print(f"REST http://{config.host}:{config.rest_port}{grpc_text}", flush=True)
    _run_event_loop(serve(config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-tfx serve",
        description="Serve the pushed model over TF Serving's REST and gRPC APIs, "
        "loading new versions as they are pushed.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO")
    add_serve_arguments(parser)
    return parser


def _run_event_loop(coroutine) -> None:
    """uvloop's event loop where installed (a dependency of the package): libuv in C
    instead of asyncio's pure-Python selector loop roughly halves the loop's CPU per
    request, which is a third of the server's per-image cost under load."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run_serve(args)


if __name__ == "__main__":
    sys.exit(main())
