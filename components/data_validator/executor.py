"""``ExampleValidator`` that stops the run: anomalies against the schema of the baseline
model (the served one), and drift of the training data against that model's training
data.

TFX's own ExampleValidator records anomalies of the statistics against the schema
it is given and lets the run go on; in this pipeline that schema would be inferred
from the same statistics a step earlier, so it could never find anything. This
component (same node id, ``ExampleValidator``, same ``ExampleAnomalies`` output)
instead:

1. validates every split's statistics with TFDV against the schema the baseline
   model was trained with (the Trainer stores it in the model, see
   ``trainer/export.py`` ``write_data_contract``), or, with no baseline (nothing
   served yet), against the run's own inferred schema;
2. compares the training split's data profile (``components/data_validator/profile.py``:
   per-image mean intensity, ink fraction, labels) with the profile stored in that
   model, using TFDV's drift comparators: Jensen-Shannon divergence on the image
   features, L-infinity distance on the label distribution;
3. writes the anomalies as TFX does (``Split-<split>/SchemaDiff.pb``, drift merged
   into the train split's) and, if there is any, raises ``DataValidationError``
   naming split, feature, the measured value and the bound. Transform waits for this
   node, so nothing is transformed, trained or pushed.

The baseline comes from the same resolver as the Evaluator's baseline, so the check
needs no ML Metadata access of its own: ``served_model_resolver``
(``components/served_model/resolver.py``), the model the serving base path serves
now, after a rollback the restored one; on Kubeflow, whose compiler takes only TFX's
built-in strategies, ``latest_blessed_model_resolver`` (docs/orchestrators.md). The
messages say "the baseline model" because this executor cannot tell which of the two
it was given.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils, json_utils, path_utils, writer_utils

from components.data_validator import profile as data_profile

STATISTICS_KEY = "statistics"
SCHEMA_KEY = "schema"
EXAMPLES_KEY = "examples"
BASELINE_MODEL_KEY = "baseline_model"
ANOMALIES_KEY = "anomalies"
TRAIN_SPLIT = "train"
ANOMALIES_FILE = "SchemaDiff.pb"  # TFX's ExampleValidator file name
DEFAULT_MAX_DRIFT = data_profile.DEFAULT_MAX_DRIFT
DEFAULT_MAX_LABEL_DRIFT = data_profile.DEFAULT_MAX_LABEL_DRIFT


class DataValidationError(ValueError):
    """The run's data has anomalies or drifted beyond the bounds; nothing runs after."""


def contract_dir(serving_model_dir: str) -> str:
    return os.path.join(serving_model_dir, data_profile.CONTRACT_DIR)


def read_contract(
    model: types.Artifact,
) -> tuple[schema_pb2.Schema | None, data_profile.DataProfile] | None:
    """The schema (None if the model's Trainer had none) and training-data profile
    stored in ``model``, or None for a model exported before models carried them."""
    serving_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    directory = contract_dir(serving_dir)
    schema_path = os.path.join(directory, data_profile.SCHEMA_FILE)
    profile_path = os.path.join(directory, data_profile.PROFILE_FILE)
    if not fileio.exists(profile_path):
        return None
    schema = io_utils.SchemaReader().read(schema_path) if fileio.exists(schema_path) else None
    with fileio.open(profile_path, "r") as handle:
        profile = data_profile.DataProfile.from_json(handle.read(), profile_path)
    return schema, profile


def split_files(examples: types.Artifact, split: str) -> list[str]:
    directory = artifact_utils.get_split_uri([examples], split)
    return sorted(os.path.join(directory, name) for name in fileio.listdir(directory))


def describe_anomalies(
    split: str, anomalies: anomalies_pb2.Anomalies, bounds: dict[str, str] | None = None
) -> list[str]:
    """One line per anomalous feature (or the dataset): what TFDV found. Drift is
    told in numbers: the measured distance, the bound and the flag that sets it."""
    drift = {
        ".".join(info.path.step): info.drift_measurements for info in anomalies.drift_skew_info
    }
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        measurements = [m for m in drift.get(feature, ()) if m.value > m.threshold]
        if measurements:
            text = "; ".join(
                f"drifted from the baseline model's training data: {_MEASURE[m.type]} "
                f"{m.value:.4f} > bound {m.threshold:g} ({(bounds or {}).get(feature, '')})"
                for m in measurements
            )
        else:
            text = "; ".join(r.description or r.short_description for r in info.reason)
        lines.append(f"split '{split}': feature '{feature}': {text}")
    if anomalies.HasField("dataset_anomaly_info"):
        reasons = "; ".join(r.description for r in anomalies.dataset_anomaly_info.reason)
        lines.append(f"split '{split}': dataset: {reasons}")
    return lines


_MEASURE = {
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: (
        "Jensen-Shannon divergence"
    ),
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity distance",
    anomalies_pb2.DriftSkewInfo.Measurement.NORMALIZED_ABSOLUTE_DIFFERENCE: (
        "normalized absolute difference"
    ),
}
# Which `mnist-tfx run` flag sets the bound of each profile feature.
_BOUND_FLAGS = {
    **{name: "--max-drift" for name in data_profile.PROFILE_FEATURES},
    data_profile.LABEL_KEY: "--max-label-drift",
}


def check_drift(
    current: data_profile.DataProfile,
    baseline: data_profile.DataProfile,
    max_drift: float,
    max_label_drift: float,
) -> anomalies_pb2.Anomalies:
    """TFDV's drift comparison of two profiles (see ``data_profile.drift_schema``)."""
    return tfdv.validate_statistics(
        statistics=data_profile.to_statistics(current),
        schema=data_profile.drift_schema(max_drift, max_label_drift),
        previous_statistics=data_profile.to_statistics(baseline),
    )


def drift_figures(anomalies: anomalies_pb2.Anomalies) -> dict[str, float]:
    """feature -> measured distance, from TFDV's drift_skew_info."""
    return {
        ".".join(info.path.step): round(measurement.value, 6)
        for info in anomalies.drift_skew_info
        for measurement in info.drift_measurements
    }


class Executor(base_executor.BaseExecutor):
    def Do(  # noqa: N802 (TFX's executor interface)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        stats_artifact = artifact_utils.get_single_instance(input_dict[STATISTICS_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        output = artifact_utils.get_single_instance(output_dict[ANOMALIES_KEY])
        exclude = json_utils.loads(exec_properties.get("exclude_splits") or "null") or []
        splits = [
            split
            for split in artifact_utils.decode_split_names(stats_artifact.split_names)
            if split not in exclude
        ]
        output.split_names = artifact_utils.encode_split_names(splits)
        max_drift = float(exec_properties["max_drift"])
        max_label_drift = float(exec_properties["max_label_drift"])

        baselines = input_dict.get(BASELINE_MODEL_KEY) or []
        contract = read_contract(baselines[0]) if baselines else None
        if contract is not None:
            schema, baseline_profile = contract
            source = f"the baseline model's training schema ({baselines[0].uri})"
        else:
            schema = io_utils.SchemaReader().read(
                io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri(input_dict[SCHEMA_KEY]))
            )
            baseline_profile = None
            source = (
                "this run's inferred schema (the baseline model carries none)"
                if baselines
                else "this run's inferred schema (no baseline model to compare with yet)"
            )
            if baselines:
                logging.warning(
                    "baseline model %s carries no data contract; drift not checked",
                    baselines[0].uri,
                )
        output.set_string_custom_property("schema_source", source)

        problems: list[str] = []
        blessed: dict[str, int] = {}
        for split in splits:
            stats = stats_artifact_utils.load_statistics(stats_artifact, split).proto()
            anomalies = tfdv.validate_statistics(statistics=stats, schema=schema)
            if split == TRAIN_SPLIT:
                current_profile = data_profile.profile_tfrecords(split_files(examples, split))
                profile_path = os.path.join(output.uri, data_profile.PROFILE_FILE)
                # An orchestrator need not create the output directory (a KFP launcher
                # on a mounted volume does not); on an object store this is a no-op.
                fileio.makedirs(output.uri)
                with fileio.open(profile_path, "w") as handle:
                    handle.write(current_profile.to_json())
                if baseline_profile is not None:
                    drift = check_drift(
                        current_profile, baseline_profile, max_drift, max_label_drift
                    )
                    for feature, info in drift.anomaly_info.items():
                        anomalies.anomaly_info[feature].CopyFrom(info)
                    anomalies.drift_skew_info.extend(drift.drift_skew_info)
                    figures = drift_figures(drift)
                    output.set_json_value_custom_property("drift", figures)
                    logging.info("drift against the baseline model's training data: %s", figures)
            split_dir = artifact_utils.get_split_uri([output], split)
            fileio.makedirs(split_dir)
            writer_utils.write_anomalies(os.path.join(split_dir, ANOMALIES_FILE), anomalies)
            found = describe_anomalies(split, anomalies, _BOUND_FLAGS)
            blessed[split] = 0 if found else 1
            problems.extend(found)
        output.set_json_value_custom_property("blessed", blessed)
        if problems:
            raise DataValidationError(
                "the ExampleValidator stopped the run; nothing was transformed, trained "
                "or pushed.\n  "
                + "\n  ".join(problems)
                + f"\n  (checked against {source}; anomalies written to {output.uri})"
            )
