"""The ``DataValidator`` component (node id ``ExampleValidator``): its spec and class.

What it checks and why is in ``executor.py``.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.data_validator.executor import (
    ANOMALIES_KEY,
    BASELINE_MODEL_KEY,
    DEFAULT_MAX_DRIFT,
    DEFAULT_MAX_LABEL_DRIFT,
    EXAMPLES_KEY,
    SCHEMA_KEY,
    STATISTICS_KEY,
    Executor,
)


class DataValidatorSpec(types.ComponentSpec):
    PARAMETERS = {
        # Bound on TFDV's approximate Jensen-Shannon divergence of each image feature.
        "max_drift": ExecutionParameter(type=float),
        # Bound on the L-infinity distance between the label distributions.
        "max_label_drift": ExecutionParameter(type=float),
        "exclude_splits": ExecutionParameter(type=str, optional=True),
        # pipeline/fingerprints.py: our executor's code, so that editing it changes the
        # cache key (TFX's key covers the executor's class path, not its code).
        "code_fingerprint": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics),
        SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies)}


class DataValidator(base_component.BaseComponent):
    """Validates the run's data against the baseline model's schema and training-data
    profile (the served model; the latest blessed one on Kubeflow), and fails the run
    on any anomaly or drift."""

    SPEC_CLASS = DataValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        *,
        statistics: types.BaseChannel,
        schema: types.BaseChannel,
        examples: types.BaseChannel,
        baseline_model: types.BaseChannel | None = None,
        max_drift: float = DEFAULT_MAX_DRIFT,
        max_label_drift: float = DEFAULT_MAX_LABEL_DRIFT,
        code_fingerprint: str = "",
    ) -> None:
        super().__init__(
            spec=DataValidatorSpec(
                statistics=statistics,
                schema=schema,
                examples=examples,
                baseline_model=baseline_model,
                max_drift=float(max_drift),
                max_label_drift=float(max_label_drift),
                code_fingerprint=code_fingerprint,
                anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies),
            )
        )
