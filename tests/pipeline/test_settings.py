"""The typed settings of ``create_pipeline`` (``pipeline/settings.py``): each object
refuses a bad value with an error naming the field, the value and what was expected,
and ``settings_from_config`` turns a RunConfig into the settings every runner uses."""

from __future__ import annotations

import pytest

from ingest.datasets import get_dataset
from pipeline.config import DEFAULT_BEAM_ARGS, RunConfig, code_fingerprint
from pipeline.fingerprints import component_fingerprints
from pipeline.settings import (
    DataSettings,
    DriftSettings,
    PipelinePaths,
    PipelineSettings,
    ReleaseSettings,
    RuntimeSettings,
    SettingsError,
    TrainingSettings,
    settings_from_config,
)

DIGITS = tuple(str(i) for i in range(10))


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: DataSettings(dataset="cifar", class_names=DIGITS),
            "DataSettings.dataset = 'cifar': expected one of ['fashion_mnist', 'mnist']",
        ),
        (
            lambda: DataSettings(dataset="mnist", class_names=DIGITS[:9]),
            "DataSettings.class_names = ('0', '1', '2', '3', '4', '5', '6', '7', '8'): "
            "expected 10 names",
        ),
        (
            lambda: DataSettings(dataset="mnist", class_names=DIGITS, num_spans=0),
            "DataSettings.num_spans = 0: expected an integer >= 1",
        ),
        (
            lambda: ReleaseSettings(min_accuracy=1.5),
            "ReleaseSettings.min_accuracy = 1.5: expected a number in [0, 1]",
        ),
        (
            lambda: ReleaseSettings(min_accuracy=float("nan")),
            "ReleaseSettings.min_accuracy = nan: expected a number in [0, 1]",
        ),
        (
            lambda: ReleaseSettings(min_accuracy=0.9, min_class_accuracy={3: -0.1}),
            "ReleaseSettings.min_class_accuracy[3] = -0.1: expected a number in [0, 1]",
        ),
        (
            lambda: ReleaseSettings(min_accuracy=0.9, min_class_accuracy={10: 0.5}),
            "ReleaseSettings.min_class_accuracy = 10: expected labels 0..9",
        ),
        (
            lambda: ReleaseSettings(min_accuracy=0.9, keep_versions=-1),
            "ReleaseSettings.keep_versions = -1: expected an integer >= 0",
        ),
        (
            lambda: DriftSettings(max_drift=2),
            "DriftSettings.max_drift = 2: expected a number in [0, 1]",
        ),
        (
            lambda: DriftSettings(max_label_drift="0.1"),
            "DriftSettings.max_label_drift = '0.1': expected a number in [0, 1]",
        ),
        (
            lambda: RuntimeSettings(beam_pipeline_args="--runner=DirectRunner"),
            "RuntimeSettings.beam_pipeline_args = '--runner=DirectRunner': "
            "expected a sequence of strings",
        ),
        (
            lambda: TrainingSettings(hparams=["epochs", 3]),
            "TrainingSettings.hparams = ['epochs', 3]: expected a mapping of name to value",
        ),
        (
            lambda: PipelinePaths(
                pipeline_name="p", pipeline_root="", data_root="d", serving_model_dir="s"
            ),
            "PipelinePaths.pipeline_root = '': expected a non-empty string",
        ),
        (
            lambda: PipelineSettings(
                data=DataSettings(dataset="mnist", class_names=DIGITS),
                training=TrainingSettings(hparams={}),
                release={"min_accuracy": 0.9},
            ),
            "PipelineSettings.release = {'min_accuracy': 0.9}: expected ReleaseSettings",
        ),
    ],
)
def test_a_bad_setting_is_refused_naming_the_field(build, message):
    with pytest.raises(SettingsError) as error:
        build()
    assert str(error.value) == message


def test_settings_are_frozen_copies():
    floors = {1: 0.5}
    release = ReleaseSettings(min_accuracy=0.9, min_class_accuracy=floors)
    floors[2] = 0.7
    assert dict(release.min_class_accuracy) == {1: 0.5}
    with pytest.raises(TypeError):
        release.min_class_accuracy[3] = 0.1
    runtime = RuntimeSettings(beam_pipeline_args=["--a=1"])
    assert runtime.beam_pipeline_args == ("--a=1",)


def test_settings_from_config_carries_every_run_flag():
    config = RunConfig(
        dataset="fashion_mnist",
        min_accuracy=0.8,
        min_class_accuracy=0.5,
        max_accuracy_drop=0.02,
        keep_versions=3,
        max_drift=0.2,
        max_label_drift=0.3,
        num_spans=2,
        hparams={"epochs": 2},
        enable_cache=False,
    )
    settings = settings_from_config(config, metadata_connection_config=None)
    assert settings.data == DataSettings(
        dataset="fashion_mnist", class_names=get_dataset("fashion_mnist").class_names, num_spans=2
    )
    assert settings.data.class_names[6] == "Shirt"
    assert settings.training.hparams["epochs"] == 2
    assert settings.training.code_fingerprint == code_fingerprint()
    assert settings.release.min_accuracy == 0.8
    assert dict(settings.release.min_class_accuracy) == {label: 0.5 for label in range(10)}
    assert (settings.release.max_accuracy_drop, settings.release.keep_versions) == (0.02, 3)
    assert (settings.drift.max_drift, settings.drift.max_label_drift) == (0.2, 0.3)
    assert settings.runtime == RuntimeSettings(
        beam_pipeline_args=DEFAULT_BEAM_ARGS,
        enable_cache=False,
        metadata_connection_config=None,
        code_fingerprints=component_fingerprints(),
    )


def test_settings_from_config_uses_the_dataset_defaults():
    settings = settings_from_config(RunConfig(dataset="mnist"))
    assert settings.release.min_accuracy == 0.98
    assert dict(settings.release.min_class_accuracy) == {label: 0.95 for label in range(10)}
    assert settings.release.max_accuracy_drop == 0.0
    assert settings.drift == DriftSettings()
