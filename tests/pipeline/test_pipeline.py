"""The pipeline definition without running it: component order and wiring, the
Evaluator's thresholds, the run paths and the code fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import RunConfig, code_fingerprint
from pipeline.pipeline import COMPONENT_ORDER, create_pipeline, make_eval_config
from pipeline.settings import (
    DataSettings,
    PipelinePaths,
    PipelineSettings,
    ReleaseSettings,
    RuntimeSettings,
    TrainingSettings,
)


def _pipeline(tmp_path: Path, fingerprint: str = ""):
    paths = PipelinePaths(
        pipeline_name="p",
        pipeline_root=str(tmp_path / "root"),
        data_root=str(tmp_path / "data"),
        serving_model_dir=str(tmp_path / "serving" / "mnist"),
    )
    settings = PipelineSettings(
        data=DataSettings(dataset="mnist", class_names=tuple(str(i) for i in range(10))),
        training=TrainingSettings(hparams={"epochs": 1}, code_fingerprint=fingerprint),
        release=ReleaseSettings(min_accuracy=0.9),
        runtime=RuntimeSettings(beam_pipeline_args=("--direct_num_workers=1",)),
    )
    return create_pipeline(paths, settings)


def test_components_in_order_with_the_baseline_resolver(tmp_path):
    pipeline = _pipeline(tmp_path)
    ids = [c.id for c in pipeline.components]
    resolvers = ("served_model_data_resolver", "served_model_resolver")
    assert [i for i in ids if i not in resolvers] == list(COMPONENT_ORDER)
    # Each resolver right before its consumer: the data one needs ExampleGen's
    # examples, the Evaluator's the Trainer's model (its candidates).
    assert ids.index("ExampleGen") < ids.index(resolvers[0]) < ids.index("ExampleValidator")
    assert ids.index("Trainer") < ids.index(resolvers[1]) < ids.index("Evaluator")
    evaluator = pipeline.components[ids.index("Evaluator")]
    validator = pipeline.components[ids.index("ExampleValidator")]
    # The gate's bar is the model being served, not the latest blessed one.
    assert evaluator.inputs["baseline_model"].producer_component_id == resolvers[1]
    assert validator.inputs["baseline_model"].producer_component_id == resolvers[0]
    assert evaluator.inputs["model"].producer_component_id == "Trainer"
    by_id = {c.id: c for c in pipeline.components}
    for resolver, consumer, key, producer in (
        (resolvers[0], "ExampleValidator", "examples", "ExampleGen"),
        (resolvers[1], "Evaluator", "model", "Trainer"),
    ):
        config = by_id[resolver].exec_properties["source_uri"]
        assert (config["consumer"], config["candidate_input"]) == (consumer, key)
        assert producer in {n.id for n in by_id[resolver].upstream_nodes}, resolver
    assert pipeline.enable_cache is True
    assert pipeline.beam_pipeline_args == ["--direct_num_workers=1"]


def test_user_code_is_referred_to_by_module_path(tmp_path):
    pipeline = _pipeline(tmp_path, fingerprint="abc")
    by_id = {c.id: c for c in pipeline.components}
    assert by_id["Transform"].exec_properties["preprocessing_fn"] == (
        "trainer.transform.preprocessing_fn"
    )
    assert by_id["Trainer"].exec_properties["run_fn"] == "trainer.task.run_fn"
    config = by_id["Trainer"].exec_properties["custom_config"]
    assert '"code_fingerprint": "abc"' in config and '"epochs": 1' in config


def _thresholds(config):
    (metrics_spec,) = config.metrics_specs
    accuracy = next(m for m in metrics_spec.metrics if m.class_name == "SparseCategoricalAccuracy")
    return accuracy.per_slice_thresholds


def test_eval_config_floors_and_baseline_change():
    thresholds = _thresholds(make_eval_config(0.97, {3: 0.9, 5: 0.8}, max_accuracy_drop=0.01))
    overall, class3, class5 = thresholds
    assert overall.slicing_specs[0].feature_values == {}
    assert overall.threshold.value_threshold.lower_bound.value == pytest.approx(0.97)
    assert overall.threshold.change_threshold.absolute.value == pytest.approx(-0.01)
    assert class3.slicing_specs[0].feature_values == {"label": "3"}
    assert class3.threshold.value_threshold.lower_bound.value == pytest.approx(0.9)
    assert not class3.threshold.HasField("change_threshold")
    assert class5.threshold.value_threshold.lower_bound.value == pytest.approx(0.8)


def test_no_drop_allowed_means_a_tiny_negative_bound():
    (overall,) = _thresholds(make_eval_config(0.5))
    assert -1e-9 < overall.threshold.change_threshold.absolute.value < 0


def test_run_config_defaults_live_under_one_root():
    config = RunConfig(dataset="fashion_mnist")
    assert config.name == "fashion_mnist_cnn"
    assert config.pipeline_root == Path("tfx_output/fashion_mnist_cnn/artifacts")
    assert config.metadata == Path("tfx_output/fashion_mnist_cnn/metadata.sqlite")
    assert config.serving_model_dir == Path("tfx_output/serving/fashion_mnist")
    assert config.accuracy_floor == 0.88
    assert config.class_accuracy_floors == {label: 0.60 for label in range(10)}
    assert RunConfig(dataset="mnist", min_class_accuracy=0).class_accuracy_floors == {}


def test_code_fingerprint_is_stable_hex():
    first, second = code_fingerprint(), code_fingerprint()
    assert first == second and len(first) == 16
    int(first, 16)


def test_an_object_store_serving_root_reaches_the_pusher_as_a_url(tmp_path):
    """`run --serving-root s3://...`: the URL survives the flag, the checks (an object
    store is checked on first use, not as a local directory) and the config, and is the
    Pusher's and the served-model resolver's base path, `s3://` and not pathlib's `s3:/`."""
    from cli.main import build_parser
    from pipeline.local_runner import build_pipeline
    from pipeline.run_flags import check_args, run_config_from_args

    args = build_parser().parse_args(
        ["run", "--output-root", str(tmp_path / "out"), "--serving-root", "s3://bucket/serving/"]
    )
    assert args.serving_root == "s3://bucket/serving"
    check_args(args, writes=("output_root", "serving_root"))
    assert not (tmp_path / "s3:").exists()
    config = run_config_from_args(args)
    assert config.serving_model_dir == "s3://bucket/serving/mnist"
    by_id = {c.id: c for c in build_pipeline(config, tmp_path / "data").components}
    destination = by_id["Pusher"].exec_properties["push_destination"]
    assert '"base_directory": "s3://bucket/serving/mnist"' in destination
    local = RunConfig(dataset="mnist", output_root=tmp_path / "out")
    assert local.serving_model_dir == tmp_path / "out" / "serving" / "mnist"
