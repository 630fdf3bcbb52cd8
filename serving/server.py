"""The embedded TF-Serving-compatible server: its settings, the wiring of the
version watcher, batcher, REST (aiohttp) and gRPC (grpc.aio) servers on one
asyncio loop, and the ``serve`` command line (``mnist-tfx serve``, or
``python -m serving.server``). Model versions run on a small pool of model threads;
TensorFlow releases the GIL while it computes, so the loop keeps answering.

A configuration the server cannot start with (a malformed ``--model-config-file``, a
port in use) is one ``error: ...`` line on stderr naming the file or port and what
was expected, and exit code 2, before any model is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from serving import object_store, request_log  # noqa: E402
from serving.batching import (  # noqa: E402
    DEFAULT_BATCH_THREADS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_ENQUEUED_BATCHES,
    DEFAULT_TIMEOUT_S,
    BatchingConfig,
)
from serving.versions import (  # noqa: E402
    DEFAULT_LOAD_RETRY_INTERVAL_S,
    DEFAULT_MAX_NUM_LOAD_RETRIES,
    ModelConfig,
    RetryPolicy,
    VersionPolicy,
)

logger = logging.getLogger(__name__)

DEFAULT_REST_PORT = 8501
DEFAULT_GRPC_PORT = 8500
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
_CONFIG_EXAMPLE = (
    'expected a ModelServerConfig text proto, e.g. model_config_list { config { name: "mnist" '
    'base_path: "/models/mnist" model_platform: "tensorflow" } }'
)


class StartupError(Exception):
    """The server cannot start as configured (e.g. a port is in use); the text says why."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything one server needs; by default it listens on localhost only."""

    models: tuple[ModelConfig, ...]
    host: str = "127.0.0.1"
    rest_port: int = DEFAULT_REST_PORT
    grpc_port: int | None = DEFAULT_GRPC_PORT
    poll_seconds: float = 1.0
    # A version that fails to load is retried this often, this far apart (TF Serving's
    # --max_num_load_retries and --load_retry_interval_micros, with their defaults).
    max_num_load_retries: int = DEFAULT_MAX_NUM_LOAD_RETRIES
    load_retry_interval_s: float = DEFAULT_LOAD_RETRY_INTERVAL_S
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # None: DEFAULT_BATCH_THREADS with batching; without, one per core, so requests
    # run side by side as TF Serving runs them on its request threads.
    model_threads: int | None = None
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    # TensorFlow's own thread pools (TF Serving's --tensorflow_intra_op_parallelism and
    # --tensorflow_inter_op_parallelism); 0 lets TensorFlow choose. Intra-op None: one
    # thread fewer than the cores this process may use (``tf_intra_op_threads``).
    intra_op_threads: int | None = None
    inter_op_threads: int = 0
    # TF Serving's --mixed_precision: None (float32, the default) or "bfloat16", every
    # model's matrix products and convolutions in bfloat16 (serving/signatures.py).
    mixed_precision: str | None = None
    # Request logs (serving/request_log.py): a file is closed after this many records or
    # this many seconds, whichever comes first.
    log_max_records_per_file: int = request_log.DEFAULT_MAX_RECORDS_PER_FILE
    log_rotate_seconds: float = request_log.DEFAULT_ROTATE_SECONDS
    # The draw-a-digit page on the REST port (GET /, serving/ui/); --no-ui turns it off.
    ui: bool = True

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("configure at least one model")
        names = [model.name for model in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        for flag, port in (("--rest-port", self.rest_port), ("--grpc-port", self.grpc_port)):
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{flag}: expected a port number 0..65535, got {port}")
        if self.rest_port and self.rest_port == self.grpc_port:
            raise ValueError(
                f"--rest-port and --grpc-port are both {self.rest_port}; expected two ports"
            )
        if self.poll_seconds <= 0:
            raise ValueError(f"poll interval must be > 0 seconds, got {self.poll_seconds}")
        self.retry  # noqa: B018 - validates the retry settings
        if self.max_request_bytes < 1024:
            raise ValueError(
                f"max request size must be >= 1024 bytes, got {self.max_request_bytes}"
            )
        if self.model_threads is not None and self.model_threads < 1:
            raise ValueError(f"model threads must be >= 1, got {self.model_threads}")
        if (self.intra_op_threads or 0) < 0 or self.inter_op_threads < 0:
            raise ValueError(
                "TensorFlow thread counts must be >= 0 (0: TensorFlow's choice), got "
                f"intra-op {self.intra_op_threads}, inter-op {self.inter_op_threads}"
            )
        if self.log_max_records_per_file < 1:
            raise ValueError(
                "--logging-max-records-per-file: expected >= 1, got "
                f"{self.log_max_records_per_file}"
            )
        if self.log_rotate_seconds <= 0:
            raise ValueError(
                f"--logging-rotate-seconds: expected > 0, got {self.log_rotate_seconds}"
            )

    @property
    def request_logging(self) -> dict[str, object]:
        """The LoggingConfig of every model that logs its requests, by model name."""
        return {model.name: model.logging for model in self.models if model.logging is not None}

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_num_load_retries, self.load_retry_interval_s)

    @property
    def tf_intra_op_threads(self) -> int:
        """The intra-op threads TensorFlow is given: the setting, else one fewer than
        the cores this process may run on (at least 1). The REST and gRPC front end is
        one Python thread (the event loop) that keeps about one core busy under load;
        TensorFlow's default, one intra-op thread per core, makes each model call share
        every core with it. Leaving the loop its core was measured faster on 2 cores,
        throughput and latency alike (docs/benchmarks.md)."""
        if self.intra_op_threads is not None:
            return self.intra_op_threads
        return max(1, usable_cores() - 1)

    @property
    def threads(self) -> int:
        """How many model threads run: the setting, else the default for the mode
        (without batching, one per core this process may run on)."""
        if self.model_threads is not None:
            return self.model_threads
        return DEFAULT_BATCH_THREADS if self.batching.enabled else usable_cores()


async def serve(config: ServerConfig, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT / SIGTERM when none is given)."""
    import grpc
    from aiohttp import web

    from serving.batching import Batcher
    from serving.grpc_api import add_services
    from serving.metrics import ServingMetrics
    from serving.rest_api import RestApi
    from serving.service import InferenceService
    from serving.versions import ModelRegistry, load_and_warm_up

    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    models = ModelRegistry(
        config.models,
        config.poll_seconds,
        loader=functools.partial(load_and_warm_up, mixed_precision=config.mixed_precision),
        retry=config.retry,
    )
    metrics = ServingMetrics(models)
    executor = ThreadPoolExecutor(config.threads, thread_name_prefix="model")
    batcher = Batcher(
        executor, config.threads, config.batching, on_batch=metrics.batch_size.observe
    )
    request_logs = None
    if config.request_logging:
        request_logs = request_log.RequestLogs(
            config.request_logging, config.log_max_records_per_file, config.log_rotate_seconds
        )
        request_logs.start()
    service = InferenceService(models, batcher, request_logs)

    runner = web.AppRunner(
        RestApi(service, metrics, config.max_request_bytes, ui=config.ui).app(), access_log=None
    )
    await runner.setup()
    grpc_server = None
    try:
        try:
            await web.TCPSite(runner, config.host, config.rest_port).start()
        except OSError as error:
            raise StartupError(
                _listen_error("REST", "--rest-port", config.host, config.rest_port, error)
            ) from None
        logger.info("REST API on http://%s:%d/v1/models", config.host, config.rest_port)
        if config.grpc_port is not None:
            server = grpc.aio.server(
                options=[
                    ("grpc.max_receive_message_length", config.max_request_bytes),
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                    ("grpc.so_reuseport", 0),
                ]
            )
            add_services(server, service, metrics)
            try:
                server.add_insecure_port(f"{config.host}:{config.grpc_port}")
            except RuntimeError as error:  # grpc's "Failed to bind to address ..."
                raise StartupError(
                    _listen_error("gRPC", "--grpc-port", config.host, config.grpc_port, error)
                ) from None
            await server.start()
            grpc_server = server
            logger.info("gRPC API on %s:%d", config.host, config.grpc_port)
        models.start()
        await stop.wait()
    finally:
        logger.info("shutting down")
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        await runner.cleanup()
        models.stop()
        batcher.close()
        executor.shutdown(wait=False)
        if request_logs is not None:
            request_logs.close()  # the open files are closed and renamed


def _listen_error(api: str, flag: str, host: str, port: int, error: Exception) -> str:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return (
        f"cannot listen on {host}:{port} for {api} ({flag}): {reason}; expected a free port "
        f"on an address of this machine (stop what uses it, or choose another with {flag})"
    )


def port_problem(api: str, flag: str, host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port``, found by binding a probe socket
    (and closing it) before anything starts; None when it can."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            # As the servers bind: a port left in TIME_WAIT is free, a listening one is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        return _listen_error(api, flag, host, port, error)
    return None


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
    _add_logging_arguments(parser)


def _add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """Request logging (serving/request_log.py)."""
    parser.add_argument(
        "--logging-config",
        type=Path,
        metavar="FILE",
        help="log sampled requests and their responses as TF Serving's PredictionLog "
        "records: a LoggingConfig text proto (log_collector_config { filename_prefix }, "
        "sampling_config { sampling_rate }) for every model without a logging_config of its "
        "own in --model-config-file",
    )
    parser.add_argument(
        "--logging-max-records-per-file",
        type=int,
        default=request_log.DEFAULT_MAX_RECORDS_PER_FILE,
        help="close a request log file after this many records "
        f"(default {request_log.DEFAULT_MAX_RECORDS_PER_FILE:,})",
    )
    parser.add_argument(
        "--logging-rotate-seconds",
        type=float,
        default=request_log.DEFAULT_ROTATE_SECONDS,
        help="close a request log file this long after it was opened "
        f"(default {request_log.DEFAULT_ROTATE_SECONDS:g})",
    )


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
        type=object_store.base_path,
        help="directory (or s3:// or gs:// URL) holding integer version directories "
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
    """Address and ports, how often to look for versions and to retry failed loads, and
    the request size limit."""
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
        "--max-num-load-retries",
        type=int,
        default=DEFAULT_MAX_NUM_LOAD_RETRIES,
        help="times a version that failed to load is tried again before it is reported "
        f"END (default {DEFAULT_MAX_NUM_LOAD_RETRIES}, TF Serving's --max_num_load_retries)",
    )
    parser.add_argument(
        "--load-retry-interval-seconds",
        type=float,
        default=DEFAULT_LOAD_RETRY_INTERVAL_S,
        help=f"time between those tries (default {DEFAULT_LOAD_RETRY_INTERVAL_S:g}, TF "
        "Serving's --load_retry_interval_micros of one minute)",
    )
    parser.add_argument(
        "--no-ui",
        action="store_true",
        help="no draw-a-digit page: GET / and /ui/samples on the REST port answer 404 "
        "(default: the page is served)",
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
        "spreads each call over its intra-op threads (default: "
        f"{DEFAULT_BATCH_THREADS} with batching, one per core without)",
    )
    parser.add_argument(
        "--tf-intra-op-threads",
        type=int,
        help="threads one TensorFlow op may use; 0: TensorFlow's choice, one per core "
        "(default: one fewer than the cores, at least 1, leaving a core to the REST and "
        "gRPC front end's event loop)",
    )
    parser.add_argument(
        "--tf-inter-op-threads",
        type=int,
        default=0,
        help="TensorFlow ops run side by side (default 0: TensorFlow's choice)",
    )
    parser.add_argument(
        "--mixed-precision",
        choices=["bfloat16"],  # serving/signatures.py BFLOAT16
        help="run the models' matrix products and convolutions in bfloat16 (TF Serving's "
        "--mixed_precision=bfloat16) on CPUs with AVX512_BF16 or AMX; answers move by "
        "bfloat16 rounding (default: float32, answers as trained)",
    )


def model_configs_from_file(path: Path) -> tuple[ModelConfig, ...]:
    """ModelConfigs from a TF Serving ``models.config`` (ModelServerConfig text format).
    ValueError, naming the file and what was expected, when it cannot be read, is not
    a ModelServerConfig text proto (bad syntax, an unknown field), or names no model,
    a model without name or base_path, a model twice or a platform other than
    TensorFlow."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    where = f"--model-config-file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{where}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not UTF-8 text ({error}); {_CONFIG_EXAMPLE}") from None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        detail = " ".join(str(error).split())
        raise ValueError(f"{where}: {detail}; {_CONFIG_EXAMPLE}") from None
    if config.WhichOneof("config") == "custom_model_config":
        raise ValueError(f"{where}: custom_model_config is not supported; {_CONFIG_EXAMPLE}")
    configs = []
    for index, model in enumerate(config.model_config_list.config, start=1):
        if not model.name:
            raise ValueError(f"{where}: config {index} has no name; {_CONFIG_EXAMPLE}")
        if not model.base_path:
            raise ValueError(
                f"{where}: model {model.name} has no base_path (the directory holding its "
                f"integer version directories); {_CONFIG_EXAMPLE}"
            )
        if model.name in {c.name for c in configs}:
            # TF Serving's words (server_core.cc).
            raise ValueError(
                f"{where}: Illegal to list model {model.name} multiple times in config list"
            )
        if model.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"{where}: model {model.name} has model_platform "
                f'"{model.model_platform}"; this server serves "tensorflow" SavedModels only'
            )
        try:
            configs.append(_model_config(model))
        except ValueError as error:
            raise ValueError(f"{where}: model {model.name}: {error}") from None
        if model.HasField("logging_config"):
            request_log.check_logging_config(
                model.logging_config, f"{where}: model {model.name}: logging_config"
            )
            configs[-1] = dataclasses.replace(configs[-1], logging=model.logging_config)
    if not configs:
        raise ValueError(f"{where}: model_config_list names no model; {_CONFIG_EXAMPLE}")
    return tuple(configs)


def _model_config(model) -> ModelConfig:
    """One ModelConfig proto (name and base_path checked) as the server's ModelConfig."""
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
    base_path = object_store.base_path(model.base_path)
    return ModelConfig(model.name, base_path, policy, dict(model.version_labels))


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, as ``taskset`` or a
    container's cpuset sets it), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def configure_tensorflow_threads(config: ServerConfig) -> tuple[int, int]:
    """Give TensorFlow the configured thread pools before the first model loads; the
    intra-op and inter-op counts then in effect, as TensorFlow reports them (0: its
    choice, one per core). The pools are process-wide and fixed once TensorFlow has
    started, so this belongs to the process's entry point (``run_serve``); where
    TensorFlow already runs, they stay as they are and a warning says so."""
    import tensorflow as tf

    threading = tf.config.threading
    pools = (
        (
            "intra-op",
            config.tf_intra_op_threads,
            threading.get_intra_op_parallelism_threads,
            threading.set_intra_op_parallelism_threads,
        ),
        (
            "inter-op",
            config.inter_op_threads,
            threading.get_inter_op_parallelism_threads,
            threading.set_inter_op_parallelism_threads,
        ),
    )
    for label, count, get, set_ in pools:
        if get() == count:
            continue
        try:
            set_(count)
        except RuntimeError:  # "... cannot be modified after initialization"
            logger.warning(
                "TensorFlow already runs in this process: its %s threads stay %d, not %d",
                label,
                get(),
                count,
            )
    return (
        threading.get_intra_op_parallelism_threads(),
        threading.get_inter_op_parallelism_threads(),
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if args.model_config_file:
        models = model_configs_from_file(args.model_config_file)
    else:
        name = args.model_name or args.dataset
        base_path = args.model_base_path or args.output_root / "serving" / name
        policy = VersionPolicy(args.version_policy, args.num_latest, tuple(args.versions))
        models = (ModelConfig(name, base_path, policy, dict(args.label)),)
    if args.logging_config:
        # For every model without a logging_config of its own in --model-config-file.
        logging_config = request_log.read_logging_config(args.logging_config)
        models = tuple(
            model
            if model.logging is not None
            else dataclasses.replace(model, logging=logging_config)
            for model in models
        )
    return ServerConfig(
        models=models,
        host=args.host,
        rest_port=args.rest_port,
        grpc_port=args.grpc_port or None,
        poll_seconds=args.poll_seconds,
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_s=args.load_retry_interval_seconds,
        max_request_bytes=args.max_request_bytes,
        model_threads=args.model_threads,
        intra_op_threads=args.tf_intra_op_threads,
        inter_op_threads=args.tf_inter_op_threads,
        mixed_precision=args.mixed_precision,
        log_max_records_per_file=args.logging_max_records_per_file,
        log_rotate_seconds=args.logging_rotate_seconds,
        ui=not args.no_ui,
        batching=BatchingConfig(
            enabled=not args.no_batching,
            max_batch_size=args.max_batch_size,
            timeout_s=args.batch_timeout_ms / 1000.0,
            max_enqueued_batches=args.max_enqueued_batches,
        ),
    )


def _startup_error(message: object) -> int:
    """Print a configuration or startup error as one line on stderr; exit code 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    return 2


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted; 0 on a clean stop, 2 on a bad configuration or a port
    that cannot be listened on."""
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as error:
        return _startup_error(error)
    # Ports are probed before TensorFlow is imported, so a busy port fails at once.
    ports = [("REST", "--rest-port", config.rest_port)]
    if config.grpc_port is not None:
        ports.append(("gRPC", "--grpc-port", config.grpc_port))
    for api, flag, port in ports:
        problem = port_problem(api, flag, config.host, port)
        if problem is not None:
            return _startup_error(problem)
    # Refused rather than served without the logs someone asked for.
    for name, logging_config in config.request_logging.items():
        prefix = logging_config.log_collector_config.filename_prefix
        problem = request_log.writable_problem(prefix)
        if problem is not None:
            return _startup_error(
                f"model {name}: cannot write request logs (filename_prefix {prefix}): "
                f"{problem}; expected a writable directory"
            )
    for model in config.models:
        if model.logging is not None:
            rate = model.logging.sampling_config.sampling_rate
            prefix = model.logging.log_collector_config.filename_prefix
            print(f"logging {rate:.0%} of model {model.name}'s requests to {prefix}.*.tfrecord")
    for model in config.models:
        print(
            f"serving model {model.name} from {model.base_path} "
            f"(policy {model.policy.kind}, labels {model.labels or 'none'})"
        )
    intra, inter = configure_tensorflow_threads(config)
    print(
        f"TensorFlow threads: intra-op {intra or 'one per core'}, "
        f"inter-op {inter or 'one per core'} (cores usable: {usable_cores()})"
    )
    grpc_text = f", gRPC {config.host}:{config.grpc_port}" if config.grpc_port else ""
    print(f"REST http://{config.host}:{config.rest_port}{grpc_text}", flush=True)
    try:
        _run_event_loop(serve(config))
    except StartupError as error:  # a port taken between the probe and the bind
        return _startup_error(error)
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
