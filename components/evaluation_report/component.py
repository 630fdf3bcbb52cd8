"""The ``EvaluationReport`` component: its artifact type, spec and class.

What it writes is in ``executor.py``; the page itself is the ``report`` package.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

import report
from components.evaluation_report.executor import (
    BLESSING_KEY,
    EVALUATION_KEY,
    EXAMPLES_KEY,
    MODEL_KEY,
    MODEL_RUN_KEY,
    PUSHED_MODEL_KEY,
    REPORT_KEY,
    EvaluationReportExecutor,
)


class EvaluationReportArtifact(types.Artifact):
    """A directory holding index.html, its PNG figures and report.json."""

    # KubeflowV2DagRunner makes TYPE_NAME the artifact's schema title, which must be
    # <module>.<Class>, and its container imports that path to rebuild the artifact
    # (pipeline/kubeflow_runner.py): hence a name components/__init__.py exports.
    TYPE_NAME = "components.EvaluationReportArtifact"


class EvaluationReportSpec(types.ComponentSpec):
    """Inputs, output and settings of the ``EvaluationReport`` component."""

    PARAMETERS = {
        "dataset": ExecutionParameter(type=str),
        # JSON: the ten class names, label order.
        "class_names": ExecutionParameter(type=str),
        # JSON: the hyperparameters the Trainer ran with (its custom_config["hparams"]).
        "hparams": ExecutionParameter(type=str),
        "grid_images": ExecutionParameter(type=int, optional=True),
        "mistake_images": ExecutionParameter(type=int, optional=True),
        # pipeline/fingerprints.py: our executor's code, so that editing it changes the
        # cache key (TFX's key covers the executor's class path, not its code).
        "code_fingerprint": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        MODEL_RUN_KEY: ChannelParameter(type=standard_artifacts.ModelRun),
        EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
        PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
    }
    OUTPUTS = {REPORT_KEY: ChannelParameter(type=EvaluationReportArtifact)}


class EvaluationReport(base_component.BaseComponent):
    """Writes a self-contained HTML evaluation report (plus PNGs and report.json)
    for the model a pipeline run trained, evaluated and (maybe) pushed."""

    SPEC_CLASS = EvaluationReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(EvaluationReportExecutor)

    def __init__(
        self,
        *,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        model_run: types.BaseChannel,
        evaluation: types.BaseChannel,
        blessing: types.BaseChannel | None = None,
        pushed_model: types.BaseChannel | None = None,
        dataset: str,
        class_names: Sequence[str],
        hparams: Mapping[str, Any],
        grid_images: int = report.DEFAULT_GRID_IMAGES,
        mistake_images: int = report.DEFAULT_GRID_IMAGES,
        code_fingerprint: str = "",
    ) -> None:
        spec = EvaluationReportSpec(
            examples=examples,
            model=model,
            model_run=model_run,
            evaluation=evaluation,
            blessing=blessing,
            pushed_model=pushed_model,
            dataset=dataset,
            class_names=json.dumps(list(class_names)),
            hparams=json.dumps(dict(hparams), sort_keys=True),
            grid_images=grid_images,
            mistake_images=mistake_images,
            code_fingerprint=code_fingerprint,
            report=types.Channel(type=EvaluationReportArtifact),
        )
        super().__init__(spec=spec)
