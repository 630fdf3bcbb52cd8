"""The settings ``create_pipeline`` takes, as a few typed objects instead of loose
keywords, each validated where it is built with an error that names the field.

- ``PipelinePaths``: the pipeline's name and where its artifacts, data and pushed
  versions live. Each runner chooses these itself (local paths, or URIs on a cluster).
- ``PipelineSettings``: everything else, grouped by concern (data, training, release
  gate, drift, runtime). ``settings_from_config`` builds it from a ``RunConfig``;
  the local, Airflow and Kubeflow runners all call it, so they cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from components.data_validator.profile import DEFAULT_MAX_DRIFT, DEFAULT_MAX_LABEL_DRIFT
from ingest.datasets import DATASETS, NUM_CLASSES, get_dataset
from pipeline.fingerprints import COMPONENT_CODE


class SettingsError(ValueError):
    """A pipeline setting out of range; the message starts with ``Class.field``."""


def _fail(where: str, value: Any, expected: str) -> SettingsError:
    return SettingsError(f"{where} = {value!r}: expected {expected}")


def _check_fraction(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise _fail(where, value, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise _fail(where, value, "a number in [0, 1]")
    return float(value)


def _check_positive_int(where: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(where, value, f"an integer >= {minimum}")
    return value


def _check_text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, value, "a non-empty string")
    return value


@dataclass(frozen=True)
class PipelinePaths:
    """Where the pipeline lives; local paths or URIs, as the runner decides."""

    pipeline_name: str
    pipeline_root: str
    # TFRecords in spans: data_root/span-N/{train,validation,test}/*.
    data_root: str
    # TF Serving base path: versions are pushed as serving_model_dir/<integer>/.
    serving_model_dir: str

    def __post_init__(self) -> None:
        for name in ("pipeline_name", "pipeline_root", "data_root", "serving_model_dir"):
            _check_text(f"PipelinePaths.{name}", getattr(self, name))


@dataclass(frozen=True)
class DataSettings:
    """Which dataset, its class names in label order, and how many spans to train on."""

    dataset: str
    class_names: tuple[str, ...]
    # Transform and the Trainer learn from the latest `num_spans` spans.
    num_spans: int = 1

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise _fail("DataSettings.dataset", self.dataset, f"one of {sorted(DATASETS)}")
        names = tuple(self.class_names)
        if len(names) != NUM_CLASSES or not all(isinstance(n, str) and n for n in names):
            raise _fail("DataSettings.class_names", self.class_names, f"{NUM_CLASSES} names")
        object.__setattr__(self, "class_names", names)
        _check_positive_int("DataSettings.num_spans", self.num_spans)


@dataclass(frozen=True)
class TrainingSettings:
    """The Trainer's hyperparameters (``trainer.hparams.HParams.to_params()``) and the
    fingerprint of the code it runs, which invalidates the cache when the code changes."""

    hparams: Mapping[str, Any]
    code_fingerprint: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.hparams, Mapping):
            raise _fail("TrainingSettings.hparams", self.hparams, "a mapping of name to value")
        object.__setattr__(self, "hparams", MappingProxyType(dict(self.hparams)))


@dataclass(frozen=True)
class ReleaseSettings:
    """The Evaluator's gate and the Pusher's retention: a model is released only if its
    overall accuracy reaches ``min_accuracy``, does not fall more than
    ``max_accuracy_drop`` below the baseline's, and each class reaches its floor;
    the newest ``keep_versions`` released versions are kept, and so are the versions
    that a label names in the TF Serving ``models_config`` file (a path), when given."""

    min_accuracy: float
    min_class_accuracy: Mapping[int, float] = field(default_factory=dict)
    max_accuracy_drop: float = 0.0
    keep_versions: int = 5
    models_config: str | None = None

    def __post_init__(self) -> None:
        _check_fraction("ReleaseSettings.min_accuracy", self.min_accuracy)
        floors = {}
        for label, floor in dict(self.min_class_accuracy or {}).items():
            if isinstance(label, bool) or not isinstance(label, int):
                raise _fail("ReleaseSettings.min_class_accuracy", label, "integer class labels")
            if not 0 <= label < NUM_CLASSES:
                raise _fail(
                    "ReleaseSettings.min_class_accuracy", label, f"labels 0..{NUM_CLASSES - 1}"
                )
            floors[label] = _check_fraction(f"ReleaseSettings.min_class_accuracy[{label}]", floor)
        object.__setattr__(self, "min_class_accuracy", MappingProxyType(floors))
        _check_fraction("ReleaseSettings.max_accuracy_drop", self.max_accuracy_drop)
        _check_positive_int("ReleaseSettings.keep_versions", self.keep_versions, minimum=0)
        if self.models_config is not None:
            _check_text("ReleaseSettings.models_config", self.models_config)


@dataclass(frozen=True)
class DriftSettings:
    """The ExampleValidator's bounds against the baseline model's training data:
    Jensen-Shannon divergence of the image features, L-infinity of the labels."""

    max_drift: float = DEFAULT_MAX_DRIFT
    max_label_drift: float = DEFAULT_MAX_LABEL_DRIFT

    def __post_init__(self) -> None:
        _check_fraction("DriftSettings.max_drift", self.max_drift)
        _check_fraction("DriftSettings.max_label_drift", self.max_label_drift)


@dataclass(frozen=True)
class RuntimeSettings:
    """How the pipeline runs: Beam arguments, caching, the ML Metadata connection
    (None where the orchestrator provides one, as Kubeflow does), and the fingerprint
    of the code each component runs (node id -> ``pipeline.fingerprints.fingerprint``),
    which each component carries as an exec property so that the cache key changes
    when the code does. The Trainer's is ``TrainingSettings.code_fingerprint``."""

    beam_pipeline_args: tuple[str, ...] = ()
    enable_cache: bool = True
    metadata_connection_config: Any | None = None
    code_fingerprints: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        args = self.beam_pipeline_args
        if isinstance(args, str) or not all(isinstance(a, str) for a in args):
            raise _fail("RuntimeSettings.beam_pipeline_args", args, "a sequence of strings")
        object.__setattr__(self, "beam_pipeline_args", tuple(args))
        prints = self.code_fingerprints
        known = sorted(COMPONENT_CODE)
        if (
            not isinstance(prints, Mapping)
            or not set(prints) <= set(known)
            or not all(isinstance(v, str) for v in prints.values())
        ):
            raise _fail(
                "RuntimeSettings.code_fingerprints", prints, f"a mapping of {known} to strings"
            )
        object.__setattr__(self, "code_fingerprints", MappingProxyType(dict(prints)))


@dataclass(frozen=True)
class PipelineSettings:
    """Everything but the paths that decides what the pipeline does."""

    data: DataSettings
    training: TrainingSettings
    release: ReleaseSettings
    drift: DriftSettings = field(default_factory=DriftSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    def __post_init__(self) -> None:
        expected = {
            "data": DataSettings,
            "training": TrainingSettings,
            "release": ReleaseSettings,
            "drift": DriftSettings,
            "runtime": RuntimeSettings,
        }
        for name, kind in expected.items():
            if not isinstance(getattr(self, name), kind):
                raise _fail(f"PipelineSettings.{name}", getattr(self, name), kind.__name__)


def settings_from_config(config: Any, *, metadata_connection_config: Any | None = None):
    """The ``PipelineSettings`` a ``pipeline.config.RunConfig`` decides: the one place
    where the local, Airflow and Kubeflow runners turn run flags into pipeline settings.
    ``metadata_connection_config`` is the runner's choice (None on Kubeflow)."""
    from pathlib import Path

    from pipeline.fingerprints import component_fingerprints
    from trainer.hparams import hparams_from_overrides

    info = get_dataset(config.dataset)
    hparams = hparams_from_overrides(config.hparams, dataset=config.dataset)
    fingerprints = component_fingerprints()
    return PipelineSettings(
        data=DataSettings(
            dataset=config.dataset, class_names=info.class_names, num_spans=config.num_spans
        ),
        training=TrainingSettings(
            hparams=hparams.to_params(), code_fingerprint=fingerprints["Trainer"]
        ),
        release=ReleaseSettings(
            min_accuracy=config.accuracy_floor,
            min_class_accuracy=config.class_accuracy_floors,
            max_accuracy_drop=config.accuracy_drop_allowed,
            keep_versions=config.keep_versions,
            # Absolute: the Pusher may run in another working directory.
            models_config=(
                str(Path(config.models_config).resolve()) if config.models_config else None
            ),
        ),
        drift=DriftSettings(max_drift=config.max_drift, max_label_drift=config.max_label_drift),
        runtime=RuntimeSettings(
            beam_pipeline_args=tuple(config.beam_args),
            enable_cache=config.enable_cache,
            metadata_connection_config=metadata_connection_config,
            code_fingerprints=fingerprints,
        ),
    )
