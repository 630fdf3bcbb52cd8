"""Prometheus metrics of the server: requests by API, method, model and status
code, their latencies, the sizes of the batches run, and which versions are
loaded (read from the registry at scrape time, so it is never stale). Served in
the text exposition format at ``/monitoring/prometheus/metrics``, the path TF
Serving uses.

Label values are bounded, so a client cannot grow the page: a model label is the
name of a configured model or ``UNKNOWN_MODEL``, methods are the server's own
names (never taken from a request), and codes are HTTP statuses or gRPC code names.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from serving.versions import ModelRegistry

METRICS_PATH = "/monitoring/prometheus/metrics"
# The model label of requests naming a model that is not configured (or none).
UNKNOWN_MODEL = "_unknown"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0)


class _VersionCollector:
    def __init__(self, models: ModelRegistry) -> None:
        self._models = models

    def collect(self) -> Iterator[GaugeMetricFamily]:
        loaded = GaugeMetricFamily(
            "serving_model_version_available",
            "1 for each model version being served",
            labels=["model", "version"],
        )
        states = GaugeMetricFamily(
            "serving_model_version_state",
            "TF Serving state number of every version seen (30 AVAILABLE, 50 END)",
            labels=["model", "version"],
        )
        for name, served in self._models.models.items():
            for version in sorted(served.serving):
                loaded.add_metric([name, str(version)], 1)
            for version, status in sorted(served.statuses.items()):
                states.add_metric([name, str(version)], status.state.value)
        yield loaded
        yield states


class ServingMetrics:
    """The counters and histograms the REST and gRPC layers record into."""

    def __init__(self, models: ModelRegistry) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "serving_requests",
            "Requests answered, by API, method, model and status code",
            ["api", "method", "model", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "serving_request_latency_seconds",
            "Time from request received to response ready, by API and method",
            ["api", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "serving_batch_size",
            "Rows per signature call run (1 when batching is off)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.registry.register(_VersionCollector(models))
        # Fixed at start: the configured models are the only model label values.
        self._model_names = frozenset(models.models)
        # Labelled children by label values: looking them up in prometheus_client on
        # every request costs more than the increment itself.
        self._children: dict[tuple[str, ...], tuple[Counter, Histogram]] = {}

    def record(self, api: str, method: str, model: str, code: str, seconds: float) -> None:
        """Count one answered request. ``model`` is whatever the request named: any
        name that is not a configured model is counted as ``UNKNOWN_MODEL``."""
        if model not in self._model_names:
            model = UNKNOWN_MODEL
        key = (api, method, model, code)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(api, method))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
