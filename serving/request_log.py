"""Request logging as TF Serving does it: per model, a ``LoggingConfig`` text proto
(``log_collector_config { type filename_prefix }``, ``sampling_config { sampling_rate }``,
the message TF Serving's ``models.config`` takes as ``logging_config``) says where
sampled requests go and how many. Each sampled Predict, Classify or Regress call
becomes one ``PredictionLog`` record (TF Serving's ``prediction_log.proto``: the
request, the response the model gave, and ``LogMetadata`` with the model spec, the
sampling config, the SavedModel tags and the time), written to TFRecord files named
``<filename_prefix>.<UTC time>.<pid>.<sequence>.tfrecord``.

Off the request path: the request handler only draws the sample and puts the
request's arrays on a bounded queue (no copy, no protobuf); one writer thread per
distinct config builds and serializes the records and writes them. When the queue
is full the record is dropped and counted, never waited for. A file is written
under a ``.part`` name and renamed when it is closed: after ``max_records_per_file``
records, after ``rotate_seconds``, and when the server stops. Readers
(``read_prediction_logs``) therefore only ever see whole files.

Stock TF Serving cannot log with such a config: its open-source model server
registers no ``LogCollector`` type and creates its request logger without a creator,
so a ``models.config`` with ``logging_config`` fails to load there ("No
request-logger-creator provided."). The collector type this server implements is
``tfrecord`` (an empty type means the same); the records are TF Serving's own
``PredictionLog`` messages, readable with ``tensorflow_serving.apis.prediction_log_pb2``.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

COLLECTOR_TYPE = "tfrecord"
LOG_SUFFIX = ".tfrecord"
PART_SUFFIX = ".part"
SAVED_MODEL_TAGS = ("serve",)
DEFAULT_MAX_RECORDS_PER_FILE = 10_000
DEFAULT_ROTATE_SECONDS = 600.0
DEFAULT_QUEUE_SIZE = 10_000
_EXAMPLE = (
    'expected a LoggingConfig text proto, e.g. log_collector_config { type: "tfrecord" '
    'filename_prefix: "/var/log/mnist/requests" } sampling_config { sampling_rate: 0.1 }'
)


def parse_logging_config(text: str, where: str):
    """A LoggingConfig from its text format, checked; ValueError naming ``where``, the
    field, its value and what was expected."""
    from google.protobuf import text_format
    from tensorflow_serving.config import logging_config_pb2

    config = logging_config_pb2.LoggingConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ValueError(f"{where}: {' '.join(str(error).split())}; {_EXAMPLE}") from None
    check_logging_config(config, where)
    return config


def read_logging_config(path: Path):
    """``mnist-tfx serve --logging-config FILE``: the file's LoggingConfig, checked."""
    where = f"--logging-config {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{where}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not UTF-8 text ({error}); {_EXAMPLE}") from None
    return parse_logging_config(text, where)


def check_logging_config(config, where: str) -> None:
    """What this server cannot honour in a LoggingConfig, as a ValueError."""
    collector = config.log_collector_config
    if collector.type not in ("", COLLECTOR_TYPE):
        raise ValueError(
            f'{where}: log_collector_config.type "{collector.type}" is not known; expected '
            f'"{COLLECTOR_TYPE}" (or empty): PredictionLog records in TFRecord files'
        )
    if not collector.filename_prefix:
        raise ValueError(f"{where}: log_collector_config.filename_prefix is empty; {_EXAMPLE}")
    if "://" in collector.filename_prefix:
        raise ValueError(
            f'{where}: log_collector_config.filename_prefix "{collector.filename_prefix}" is a '
            "URL; expected a local path (request logs are written to local files)"
        )
    rate = config.sampling_config.sampling_rate
    if not 0.0 <= rate <= 1.0:
        raise ValueError(
            f"{where}: sampling_config.sampling_rate is {rate}; expected 0.0 to 1.0 (the "
            "fraction of requests logged)"
        )
    others = [
        f.name
        for f, _ in config.sampling_config.ListFields()
        if f.name not in ("sampling_rate", "attributes")
    ]
    if others:
        # per_task_sampling_configs (newer TF Serving): this server has no data centre
        # or task index to match.
        raise ValueError(
            f"{where}: sampling_config.{others[0]} is not supported; use sampling_rate"
        )
    for other, _ in config.ListFields():
        if other.name not in ("log_collector_config", "sampling_config"):
            # custom_logging_config (newer TF Serving) is for loggers this server lacks.
            raise ValueError(f"{where}: {other.name} is not supported; {_EXAMPLE}")


def writable_problem(prefix: str) -> str | None:
    """Why request logs cannot be written under ``prefix`` (its directory is created
    if missing, then a probe file written and removed), or None."""
    directory = os.path.dirname(os.path.abspath(prefix))
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, f".write-probe-{os.getpid()}")
        with open(probe, "wb") as handle:
            handle.write(b"")
        os.unlink(probe)
    except OSError as error:
        return f"{directory}: {error.strerror or error}"
    return None


@dataclass
class _Entry:
    """One sampled call, as the handler had it: arrays, not protos."""

    kind: str  # "predict", "classify", "regress" or "multi_inference"
    model: str
    version: int
    signature: str
    timestamp: float
    inputs: Mapping[str, np.ndarray] | None = None
    outputs: Mapping[str, np.ndarray] | None = None
    examples: Sequence[bytes] = ()
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None
    values: np.ndarray | None = None
    # multi_inference: per task (signature, method name, classification or regression)
    tasks: Sequence[tuple[str, str, Any]] = ()


def _model_spec(spec, entry: _Entry, with_version: bool) -> None:
    spec.name = entry.model
    spec.signature_name = entry.signature
    if with_version:
        spec.version.value = entry.version


def _tensor(array: np.ndarray):
    """numpy to TensorProto for a log record: numbers as ``tensor_content`` bytes (what
    ``tf.make_ndarray`` reads back), built on the writer thread, which shares the GIL
    with the event loop, so the cheapest form (``tensor_proto.array_to_tensor``)."""
    from serving.tensor_proto import array_to_tensor

    return array_to_tensor(np.asarray(array), content=True)


def build_prediction_log(entry: _Entry, sampling_config) -> Any:
    """The PredictionLog of one call (on the writer thread)."""
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.signatures import fill_classifications

    record = prediction_log_pb2.PredictionLog()
    metadata = record.log_metadata
    _model_spec(metadata.model_spec, entry, with_version=True)
    metadata.sampling_config.CopyFrom(sampling_config)
    metadata.saved_model_tags.extend(SAVED_MODEL_TAGS)
    metadata.timestamp_secs = int(entry.timestamp)
    if entry.kind == "predict":
        log = record.predict_log
        _model_spec(log.request.model_spec, entry, with_version=False)
        for key, array in entry.inputs.items():
            log.request.inputs[key].CopyFrom(_tensor(array))
        _model_spec(log.response.model_spec, entry, with_version=True)
        for key, array in entry.outputs.items():
            log.response.outputs[key].CopyFrom(_tensor(array))
        return record
    if entry.kind == "multi_inference":
        return _multi_inference_log(record, entry, example_pb2)
    log = record.classify_log if entry.kind == "classify" else record.regress_log
    _model_spec(log.request.model_spec, entry, with_version=False)
    examples = log.request.input.example_list.examples
    for serialized in entry.examples:
        examples.add().CopyFrom(example_pb2.Example.FromString(serialized))
    _model_spec(log.response.model_spec, entry, with_version=True)
    if entry.kind == "classify":
        fill_classifications(log.response.result, entry.labels, entry.scores)
    else:
        for value in entry.values.tolist():
            log.response.result.regressions.add(value=value)
    return record


def _multi_inference_log(record, entry: _Entry, example_pb2) -> Any:
    """A MultiInferenceLog: every task's model spec and method in the request, with the
    examples once, and a classification or regression result per task."""
    from serving.signatures import CLASSIFY_METHOD, fill_classifications

    log = record.multi_inference_log
    examples = log.request.input.example_list.examples
    for serialized in entry.examples:
        examples.add().CopyFrom(example_pb2.Example.FromString(serialized))
    for signature, method, result in entry.tasks:
        task = log.request.tasks.add(method_name=method)
        task.model_spec.name = entry.model
        task.model_spec.signature_name = signature
        answer = log.response.results.add()
        answer.model_spec.name = entry.model
        answer.model_spec.signature_name = signature
        answer.model_spec.version.value = entry.version
        if method == CLASSIFY_METHOD:
            labels, scores = result
            fill_classifications(answer.classification_result, labels, scores)
        else:
            for value in np.asarray(result).tolist():
                answer.regression_result.regressions.add(value=value)
    return record


@dataclass
class LoggerCounts:
    sampled: int = 0
    written: int = 0
    dropped: int = 0  # the queue was full
    failed: int = 0  # building or writing the record failed


class RequestLogger:
    """One LoggingConfig: draws the samples, queues them, and writes them on its own
    thread into rotated TFRecord files."""

    def __init__(
        self,
        config,
        max_records_per_file: int = DEFAULT_MAX_RECORDS_PER_FILE,
        rotate_seconds: float = DEFAULT_ROTATE_SECONDS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        seed: int | None = None,
    ) -> None:
        if max_records_per_file < 1:
            raise ValueError(f"max records per file must be >= 1, got {max_records_per_file}")
        if rotate_seconds <= 0:
            raise ValueError(f"rotation interval must be > 0 seconds, got {rotate_seconds}")
        self.config = config
        self.prefix = os.path.abspath(config.log_collector_config.filename_prefix)
        self.rate = config.sampling_config.sampling_rate
        self.max_records_per_file = max_records_per_file
        self.rotate_seconds = rotate_seconds
        self.counts = LoggerCounts()
        self._random = random.Random(seed)
        self._queue: queue.Queue[_Entry | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._writer = None
        self._part_path = ""
        self._opened_at = 0.0
        self._records_in_file = 0
        self._sequence = 0
        self.closed_files: list[str] = []

    # --- the request path ----------------------------------------------------------

    def sample(self) -> bool:
        return self.rate >= 1.0 or (self.rate > 0.0 and self._random.random() < self.rate)

    def submit(self, entry: _Entry) -> None:
        self.counts.sampled += 1
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.counts.dropped += 1

    # --- the writer thread ---------------------------------------------------------

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.prefix), exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, close the open file and stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while True:
            wait = None
            if self._writer is not None:
                wait = max(0.0, self._opened_at + self.rotate_seconds - time.monotonic())
            try:
                entry = self._queue.get(timeout=wait)
            except queue.Empty:
                self._close_file()  # the file is old enough: rotate by time
                continue
            if entry is None:
                self._close_file()
                return
            self._write(entry)

    def _write(self, entry: _Entry) -> None:
        try:
            serialized = build_prediction_log(
                entry, self.config.sampling_config
            ).SerializeToString()
            if self._writer is None:
                self._open_file()
            self._writer.write(serialized)
            self._records_in_file += 1
            self.counts.written += 1
        except Exception:  # noqa: BLE001 - a log record never stops the server
            self.counts.failed += 1
            if self.counts.failed == 1:
                logger.exception("cannot write a request log record under %s", self.prefix)
            return
        if self._records_in_file >= self.max_records_per_file:
            self._close_file()

    def _open_file(self) -> None:
        import tensorflow as tf

        self._sequence += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        final = f"{self.prefix}.{stamp}.{os.getpid()}.{self._sequence:05d}{LOG_SUFFIX}"
        self._part_path = final + PART_SUFFIX
        self._writer = tf.io.TFRecordWriter(self._part_path)
        self._opened_at = time.monotonic()
        self._records_in_file = 0

    def _close_file(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.close()
            final = self._part_path[: -len(PART_SUFFIX)]
            os.replace(self._part_path, final)
            self.closed_files.append(final)
        except Exception:  # noqa: BLE001
            self.counts.failed += 1
            logger.exception("cannot close the request log %s", self._part_path)
        self._writer = None


@dataclass
class RequestLogs:
    """The request loggers of a server, by model name; one logger (and file series)
    per distinct LoggingConfig, as TF Serving's ServerRequestLogger shares them."""

    configs: Mapping[str, Any]
    max_records_per_file: int = DEFAULT_MAX_RECORDS_PER_FILE
    rotate_seconds: float = DEFAULT_ROTATE_SECONDS
    queue_size: int = DEFAULT_QUEUE_SIZE
    loggers: dict[str, RequestLogger] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        shared: dict[bytes, RequestLogger] = {}
        for model, config in self.configs.items():
            key = config.SerializeToString(deterministic=True)
            if key not in shared:
                shared[key] = RequestLogger(
                    config, self.max_records_per_file, self.rotate_seconds, self.queue_size
                )
            self.loggers[model] = shared[key]

    def _distinct(self) -> list[RequestLogger]:
        return list({id(logger): logger for logger in self.loggers.values()}.values())

    def start(self) -> None:
        for request_logger in self._distinct():
            request_logger.start()

    def close(self) -> None:
        for request_logger in self._distinct():
            request_logger.close()

    def _sampled(self, model: str) -> RequestLogger | None:
        request_logger = self.loggers.get(model)
        if request_logger is None or not request_logger.sample():
            return None
        return request_logger

    def _log(self, kind: str, servable, signature: str, **fields: Any) -> None:
        """Sample the call for ``servable``'s model and, if drawn, queue its record."""
        request_logger = self._sampled(servable.model_name)
        if request_logger is not None:
            request_logger.submit(
                _Entry(
                    kind,
                    servable.model_name,
                    servable.version,
                    signature,
                    time.time(),
                    **fields,
                )  # fmt: skip
            )

    def log_predict(self, servable, signature: str, inputs, outputs) -> None:
        self._log("predict", servable, signature, inputs=inputs, outputs=outputs)

    def log_classify(self, servable, signature: str, examples, labels, scores) -> None:
        self._log("classify", servable, signature, examples=examples, labels=labels, scores=scores)

    def log_regress(self, servable, signature: str, examples, values) -> None:
        self._log("regress", servable, signature, examples=examples, values=values)

    def log_multi_inference(self, servable, examples, results) -> None:
        """``results``: (signature, method name, result) per task, as the service has them."""
        tasks = [(signature.name, method, result) for signature, method, result in results]
        signature = tasks[0][0] if tasks else ""
        self._log("multi_inference", servable, signature, examples=examples, tasks=tasks)


@dataclass
class LogReadResult:
    records: list[Any]
    files: int
    corrupt_files: list[str]


def log_files(prefix: str) -> list[str]:
    """The closed request log files of a filename prefix, oldest first (by name:
    UTC time, then pid and sequence)."""
    return sorted(glob.glob(glob.escape(prefix) + ".*" + LOG_SUFFIX))


def read_prediction_logs(prefix: str) -> LogReadResult:
    """Every PredictionLog in the closed files of ``prefix``. A file that cannot be read
    to its end (truncated, corrupt, not a PredictionLog) is skipped whole and named in
    ``corrupt_files``."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records: list[Any] = []
    corrupt: list[str] = []
    files = log_files(prefix)
    for path in files:
        try:
            parsed = [
                prediction_log_pb2.PredictionLog.FromString(raw)
                for raw in tf.data.TFRecordDataset(path).as_numpy_iterator()
            ]
        except Exception:  # noqa: BLE001 - DataLossError, DecodeError: the file is bad
            corrupt.append(path)
            continue
        records.extend(parsed)
    return LogReadResult(records, len(files), corrupt)
