"""The executor of ``EvaluationReport``, the TFX component that writes the evaluation
report of a pipeline run after the Pusher (``component.py``).

Inputs: ExampleGen's ``examples`` (the test split is predicted: the official test
set, the one the Evaluator gated on and the Trainer never saw), the Trainer's
``model`` (its serving export is run) and ``model_run`` (``training_stats.json``),
the Evaluator's ``evaluation`` (TFMA metrics, eval config, validation result) and
``blessing``, and the Pusher's ``pushed_model``. Output: an ``EvaluationReport``
artifact whose directory holds ``index.html``, the PNGs and ``report.json``.

Reading artifacts and ML Metadata facts lives here; drawing and assembling the
report lives in ``report/``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

import report
from components.pusher import model_card

EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
MODEL_RUN_KEY = "model_run"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
PUSHED_MODEL_KEY = "pushed_model"
REPORT_KEY = "report"
INPUT_KEYS = (
    EXAMPLES_KEY,
    MODEL_KEY,
    MODEL_RUN_KEY,
    EVALUATION_KEY,
    BLESSING_KEY,
    PUSHED_MODEL_KEY,
)
TEST_SPLIT = "test"


def report_html_path(artifact_uri: str) -> str:
    """Where the report's page is inside an ``EvaluationReport`` artifact."""
    return os.path.join(artifact_uri, report.HTML_FILE)


def execution_id_of(context: base_executor.BaseExecutor.Context | None) -> int | None:
    """This execution's ML Metadata id, or None when not run by an orchestrator.

    TFX's executor context has no public execution id, but its ``get_tmp_path()``
    is ``<tmp_dir>/<unique_id>/``, and the portable executor operators (Python and
    Beam) set ``unique_id`` to ``str(execution_info.execution_id)``.
    """
    if context is None:
        return None
    try:
        tmp_path = context.get_tmp_path()
    except RuntimeError:
        return None
    unique_id = os.path.basename(os.path.normpath(tmp_path))
    return int(unique_id) if unique_id.isdigit() else None


def _int_property(artifact: types.Artifact | None, name: str) -> int | None:
    if artifact is None or not artifact.has_custom_property(name):
        return None
    return int(artifact.get_int_custom_property(name))


def _string_property(artifact: types.Artifact | None, name: str) -> str | None:
    if artifact is None or not artifact.has_custom_property(name):
        return None
    return artifact.get_string_custom_property(name)


def _single(input_dict: Mapping[str, list[types.Artifact]], key: str) -> types.Artifact | None:
    artifacts = input_dict.get(key) or []
    if len(artifacts) > 1:
        raise ValueError(f"EvaluationReport: expected one {key!r} artifact, got {len(artifacts)}")
    return artifacts[0] if artifacts else None


def _mlmd_facts(
    input_dict: Mapping[str, list[types.Artifact]],
    context: base_executor.BaseExecutor.Context | None,
    blessing: types.Artifact | None,
) -> dict[str, Any]:
    node = pipeline = run_id = None
    if context is not None:
        if context.pipeline_info is not None:
            pipeline = context.pipeline_info.id or None
        if context.pipeline_node is not None:
            node = context.pipeline_node.node_info.id or None
        run_id = context.pipeline_run_id
    return {
        "pipeline": pipeline,
        "run_id": run_id,
        "node": node,
        "execution_id": execution_id_of(context),
        "input_artifact_ids": {
            key: int(artifact.id)
            for key in INPUT_KEYS
            if (artifact := _single(input_dict, key)) is not None
        },
        "baseline_model_id": _int_property(blessing, "baseline_model_id"),
    }


def gather_report_data(
    input_dict: Mapping[str, list[types.Artifact]],
    exec_properties: Mapping[str, Any],
    context: base_executor.BaseExecutor.Context | None = None,
) -> report.ReportData:
    """Read everything the report shows from the input artifacts."""
    examples = _single(input_dict, EXAMPLES_KEY)
    model = _single(input_dict, MODEL_KEY)
    model_run = _single(input_dict, MODEL_RUN_KEY)
    evaluation = _single(input_dict, EVALUATION_KEY)
    blessing = _single(input_dict, BLESSING_KEY)
    pushed = _single(input_dict, PUSHED_MODEL_KEY)
    class_names = list(json.loads(exec_properties["class_names"]))
    hparams = dict(json.loads(exec_properties.get("hparams") or "{}"))

    eval_config = report.read_eval_config(evaluation.uri)
    tfma_accuracy = report.read_tfma_accuracy(
        evaluation.uri, report.candidate_model_name(eval_config)
    )
    gate = report.read_gate(evaluation.uri, eval_config, tfma_accuracy)
    training = report.read_training_stats(model_run.uri) if model_run else None
    model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    predictions = report.predict_split(
        artifact_utils.get_split_uri([examples], TEST_SPLIT), model_dir
    )

    counts = {}
    if training and training.get("train_examples") is not None:
        counts["train"] = int(training["train_examples"])
    if training and training.get("validation_examples") is not None:
        counts["validation"] = int(training["validation_examples"])
    counts[TEST_SPLIT] = len(predictions)
    blessed = _int_property(blessing, "blessed")
    facts = report.RunFacts(
        dataset=str(exec_properties["dataset"]),
        class_names=class_names,
        model=str(hparams.get("model", "unknown")),
        hparams=hparams,
        example_counts=counts,
        blessed=None if blessed is None else bool(blessed),
        pushed=bool(_int_property(pushed, "pushed")),
        pushed_version=_string_property(pushed, "pushed_version"),
        pushed_path=_string_property(pushed, "pushed_destination"),
        push_reused_version=bool(_int_property(pushed, "reused_version")),
        mlmd=_mlmd_facts(input_dict, context, blessing),
    )
    return report.ReportData(
        facts=facts, predictions=predictions, tfma=tfma_accuracy, gate=gate, training=training
    )


class EvaluationReportExecutor(base_executor.BaseExecutor):
    """Writes the report into the output artifact's directory."""

    def Do(  # noqa: N802 - TFX's executor interface
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        output = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
        data = gather_report_data(input_dict, exec_properties, self._context)
        settings = {
            "grid_images": int(exec_properties.get("grid_images") or report.DEFAULT_GRID_IMAGES),
            "mistake_images": int(
                exec_properties.get("mistake_images") or report.DEFAULT_GRID_IMAGES
            ),
        }
        if "://" in output.uri:
            # report.write_report writes local files; a remote artifact store gets a copy.
            with tempfile.TemporaryDirectory() as local:
                written = report.write_report(local, data, **settings)
                io_utils.copy_dir(local, output.uri)
                self._link_from_card(data.facts, local, output.uri)
        else:
            written = report.write_report(output.uri, data, **settings)
            self._link_from_card(data.facts, output.uri, output.uri)
        output.set_string_custom_property("html_file", report.HTML_FILE)
        output.set_int_custom_property("test_examples", written["confusion_matrix"]["total"])
        if data.tfma.overall is not None:
            output.set_float_custom_property("accuracy", data.tfma.overall)
        output.set_int_custom_property("tfma_agrees", int(written["agreement"]["agrees"]))
        logging.info("evaluation report: %s", report_html_path(output.uri))

    def _link_from_card(self, facts: report.RunFacts, local_dir: str, uri: str) -> None:
        """The version this run pushed gets a copy of the report beside its model card,
        which then links it (``model_card.link_report``). Nothing when this run pushed
        no new version: a reused version keeps the report of the run that made it. A
        version without a card (pushed by another Pusher) is left as it is."""
        if not facts.pushed or facts.push_reused_version or not facts.pushed_path:
            return
        run_id = facts.mlmd.get("run_id") if facts.mlmd else None
        try:
            written = model_card.link_report(
                facts.pushed_path, local_dir, report_html_path(uri), run_id
            )
        except FileNotFoundError as error:
            logging.warning("evaluation report: not linked from a model card: %s", error)
            return
        logging.info("evaluation report: copied beside the model card, %d files", len(written))
