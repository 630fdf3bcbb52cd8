"""``create_pipeline``: the one definition of the TFX pipeline that every runner
(local, Beam, Airflow, Kubeflow) builds. It takes its paths and settings as typed
objects (``pipeline/settings.py``) and refers to user code (``trainer``) by module
path only.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from google.protobuf import struct_pb2
from tfx.components.evaluator.component import Evaluator
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.pusher.component import Pusher
from tfx.components.schema_gen.component import SchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.components.trainer.component import Trainer
from tfx.components.transform.component import Transform
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy,
)
from tfx.dsl.input_resolution.strategies.span_range_strategy import SpanRangeStrategy
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import (
    example_gen_pb2,
    pusher_pb2,
    range_config_pb2,
    trainer_pb2,
    transform_pb2,
)
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from components.data_validator.component import DataValidator
from components.evaluation_report.component import EvaluationReport
from components.example_gen import executor as example_gen_executor
from components.pusher.executor import AtomicPushExecutor
from components.served_model.resolver import ServedModelStrategy
from pipeline.settings import PipelinePaths, PipelineSettings

PREPROCESSING_FN = "trainer.transform.preprocessing_fn"
RUN_FN = "trainer.task.run_fn"
LABEL_KEY = "label"
PREDICTION_KEY = "probabilities"
ACCURACY_METRIC = "sparse_categorical_accuracy"
# Node ids of the baseline resolvers: the served model for the Evaluator and for the
# data validator (every runner but Kubeflow's), or one latest-blessed-model resolver
# for both (Kubeflow, whose compiler takes no custom strategy).
SERVED_BASELINE_RESOLVER = "served_model_resolver"
SERVED_DATA_BASELINE_RESOLVER = "served_model_data_resolver"
BLESSED_BASELINE_RESOLVER = "latest_blessed_model_resolver"

COMPONENT_ORDER = (
    "ExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "ExampleValidator",
    "Transform",
    "Trainer",
    "Evaluator",
    "Pusher",
    "EvaluationReport",
)


def _accuracy_threshold(lower_bound: float, max_drop: float | None = None) -> tfma.MetricThreshold:
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": lower_bound})
    )
    if max_drop is not None:
        # Candidate minus baseline must be >= -max_drop; TFMA wants a strictly
        # negative bound for "must not drop", hence the tiny epsilon.
        threshold.change_threshold.CopyFrom(
            tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                absolute={"value": -max(max_drop, 1e-10)},
            )
        )
    return threshold


def make_eval_config(
    min_accuracy: float,
    min_class_accuracy: Mapping[int, float] | None = None,
    max_accuracy_drop: float = 0.0,
) -> tfma.EvalConfig:
    """Accuracy on the test split, overall and per true class. Blessed only if overall
    accuracy reaches ``min_accuracy``, does not fall more than ``max_accuracy_drop``
    below the baseline's (the served model, the latest blessed one on Kubeflow; when
    there is one), and each class reaches its floor in ``min_class_accuracy``."""
    per_slice = [
        # Thresholds per slice: a bare `threshold` would apply to every slice.
        tfma.PerSliceMetricThreshold(
            slicing_specs=[tfma.SlicingSpec()],
            threshold=_accuracy_threshold(min_accuracy, max_accuracy_drop),
        )
    ]
    for label, floor in sorted((min_class_accuracy or {}).items()):
        per_slice.append(
            tfma.PerSliceMetricThreshold(
                slicing_specs=[tfma.SlicingSpec(feature_values={LABEL_KEY: str(label)})],
                threshold=_accuracy_threshold(floor),
            )
        )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                label_key=LABEL_KEY,
                prediction_key=PREDICTION_KEY,
            )
        ],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[LABEL_KEY])],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy",
                        per_slice_thresholds=per_slice,
                    ),
                ]
            )
        ],
    )


def _fingerprint_config(code_fingerprint: str) -> example_gen_pb2.CustomConfig:
    """ExampleGen's custom_config is a proto holding an Any: a Struct with the fingerprint."""
    config = example_gen_pb2.CustomConfig()
    fields = {"code_fingerprint": struct_pb2.Value(string_value=code_fingerprint)}
    config.custom_config.Pack(struct_pb2.Struct(fields=fields))
    return config


def _served_model_resolver(
    paths: PipelinePaths, consumer: str, candidate_input: str, candidate: Channel
) -> Resolver:
    """A ServedModelStrategy resolver for ``consumer``, which sees ``candidate`` (the
    consumer's input ``candidate_input``) besides every Model and PushedModel."""
    return Resolver(
        strategy_class=ServedModelStrategy,
        config={
            "serving_model_dir": paths.serving_model_dir,
            "consumer": consumer,
            "candidate_input": candidate_input,
        },
        model=Channel(type=standard_artifacts.Model),
        pushed_model=Channel(type=standard_artifacts.PushedModel),
        candidate=candidate,
    )


def create_pipeline(
    paths: PipelinePaths, settings: PipelineSettings, *, served_baseline: bool = True
) -> Pipeline:
    """The pipeline over the latest span of TFRecords,
    ``paths.data_root/span-N/{train,validation,test}/``, ending in a push to
    ``paths.serving_model_dir/<version>/``."""
    data, training, release = settings.data, settings.training, settings.release
    runtime = settings.runtime
    # The code each component runs, as an exec property: TFX's cache key covers our
    # module paths and executor classes but not their code (pipeline/fingerprints.py).
    code_prints = runtime.code_fingerprints
    # Imports the converted TFRecords: train (the official training set minus 1/12),
    # validation (that 1/12, for the Trainer) and test (the official test set, for the
    # Evaluator and the report). FileBasedExampleGen's driver (fingerprints, spans,
    # caching) with an executor that copies whole shards and checks every record
    # (components/example_gen/executor.py): 2-3 s on full MNIST instead of ImportExampleGen's 11-16.
    example_gen = FileBasedExampleGen(
        input_base=paths.data_root,
        input_config=example_gen_pb2.Input(
            splits=[
                # Data arrives in spans (mnist-tfx ingest); the driver picks the latest.
                example_gen_pb2.Input.Split(name="train", pattern="span-{SPAN}/train/*"),
                example_gen_pb2.Input.Split(name="validation", pattern="span-{SPAN}/validation/*"),
                example_gen_pb2.Input.Split(name="test", pattern="span-{SPAN}/test/*"),
            ]
        ),
        # Read by no one: it puts the executor's code into the cache key (pipeline/fingerprints.py).
        custom_config=_fingerprint_config(code_prints.get("ExampleGen", "")),
        custom_executor_spec=executor_spec.BeamExecutorSpec(example_gen_executor.Executor),
    ).with_id("ExampleGen")
    # What Transform and the Trainer learn from: the latest span (ExampleGen's output),
    # or with num_spans > 1 the latest num_spans spans ExampleGen has imported, found in
    # ML Metadata by a span resolver. Statistics, validation and evaluation look at the
    # latest span only.
    training_examples = example_gen.outputs["examples"]
    span_resolver = None
    if data.num_spans > 1:
        span_resolver = Resolver(
            strategy_class=SpanRangeStrategy,
            config={
                "range_config": range_config_pb2.RangeConfig(
                    rolling_range=range_config_pb2.RollingRange(num_spans=data.num_spans)
                )
            },
            # Every Examples artifact ExampleGen has published in this pipeline, not
            # only this run's (a channel from example_gen.outputs would be this run's).
            examples=Channel(
                type=standard_artifacts.Examples,
                producer_component_id=example_gen.id,
                output_key="examples",
            ),
        ).with_id("latest_spans_resolver")
        # After ExampleGen, so that this run's newest span is among them.
        span_resolver.add_upstream_node(example_gen)
        training_examples = span_resolver.outputs["examples"]
    # Per-split statistics of the raw features. Sketch-based top-k / unique counts
    # halve its time on full MNIST (8.6 -> 4.5 s for the train split); only the
    # 784-byte image strings have top-k values, and they are not used.
    statistics_gen = StatisticsGen(
        examples=example_gen.outputs["examples"],
        stats_options=tfdv.StatsOptions(experimental_use_sketch_based_topk_uniques=True),
    )
    # Schema inferred from those statistics.
    schema_gen = SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
    )
    # The model the serving base path serves now (its newest version, a rollback
    # followed to the version it restores), found in ML Metadata through the Pusher
    # that published it: the baseline the candidate must not fall below, and whose
    # training data this run's data is checked against. Not the latest *blessed*
    # model, which a run killed before its push would make the bar
    # (components/served_model/resolver.py). One resolver per consumer, each seeing
    # what its consumer checks: when the served model's own run already checked
    # exactly that (same examples, same model), the consumer gets the baseline it had
    # then, so a run with nothing new is answered from TFX's cache end to end.
    if served_baseline:
        data_baseline_resolver = _served_model_resolver(
            paths, "ExampleValidator", "examples", example_gen.outputs["examples"]
        ).with_id(SERVED_DATA_BASELINE_RESOLVER)
        # Declared here, wired to the Trainer's model below.
        baseline_resolver = None
    else:
        # Kubeflow's V2 compiler takes only TFX's built-in strategies: there the
        # baseline stays the latest blessed model (docs/orchestrators.md).
        baseline_resolver = Resolver(
            strategy_class=LatestBlessedModelStrategy,
            model=Channel(type=standard_artifacts.Model),
            model_blessing=Channel(type=standard_artifacts.ModelBlessing),
        ).with_id(BLESSED_BASELINE_RESOLVER)
        data_baseline_resolver = baseline_resolver
    # Anomalies against the schema the baseline was trained under, and drift of the
    # training data against the baseline's (components/data_validator/executor.py). Stops the
    # run on either: Transform waits for it.
    example_validator = DataValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        examples=example_gen.outputs["examples"],
        baseline_model=data_baseline_resolver.outputs["model"],
        max_drift=settings.drift.max_drift,
        max_label_drift=settings.drift.max_label_drift,
        code_fingerprint=code_prints.get("ExampleValidator", ""),
    ).with_id("ExampleValidator")
    # Pixels to float 0..1. Not materialized: the Trainer and the serving model apply
    # the graph themselves, which is cheaper than writing 784 floats per image.
    transform = Transform(
        examples=training_examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        materialize=False,
        disable_statistics=True,
        splits_config=transform_pb2.SplitsConfig(analyze=["train"]),
        # Only in the cache key: TFX binds custom_config to preprocessing_fn only if it
        # has a custom_config parameter, which ours has not.
        custom_config={"code_fingerprint": code_prints.get("Transform", "")},
    )
    transform.add_upstream_node(example_validator)
    # The Estimator-style model_fn on tf_keras; hparams and class names travel in custom_config.
    trainer = Trainer(
        run_fn=RUN_FN,
        examples=training_examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=trainer_pb2.TrainArgs(splits=["train"]),
        # fn_args.eval_files: per-epoch validation, the export's verification examples
        # and warm-up requests all come from validation; test stays unseen until the
        # Evaluator.
        eval_args=trainer_pb2.EvalArgs(splits=["validation"]),
        custom_config={
            "hparams": dict(training.hparams),
            "class_names": list(data.class_names),
            # Module paths do not change when the code does; this does, so the cache does too.
            "code_fingerprint": training.code_fingerprint,
        },
    )
    if baseline_resolver is None:
        baseline_resolver = _served_model_resolver(
            paths, "Evaluator", "model", trainer.outputs["model"]
        ).with_id(SERVED_BASELINE_RESOLVER)
    # Accuracy overall and per class on the test split, against the floors and the
    # baseline; blesses the model or not.
    evaluator = Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_resolver.outputs["model"],
        schema=schema_gen.outputs["schema"],
        eval_config=make_eval_config(
            release.min_accuracy, release.min_class_accuracy, release.max_accuracy_drop
        ),
        example_splits=["test"],
    )
    # Publishes a blessed model as the next integer version, atomically, keeping the
    # newest `keep_versions` versions.
    pusher = Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=paths.serving_model_dir)
        ),
        custom_config={
            "keep_versions": release.keep_versions,
            "code_fingerprint": code_prints.get("Pusher", ""),
            **({"models_config": release.models_config} if release.models_config else {}),
            # What the model card states that the Pusher's inputs do not carry
            # (components/pusher/model_card.py).
            "model_card": {
                "dataset": data.dataset,
                "class_names": list(data.class_names),
                "hparams": dict(training.hparams),
                "trainer_code_fingerprint": training.code_fingerprint,
            },
        },
        custom_executor_spec=executor_spec.ExecutorClassSpec(AtomicPushExecutor),
    )
    # The run's evaluation report (report/): a self-contained HTML page
    # with the confusion matrix, TFMA's per-class accuracy, prediction grids, training
    # curves and the run's facts, plus the PNGs and report.json. After the Pusher, so
    # it can say what was pushed.
    evaluation_report = EvaluationReport(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        model_run=trainer.outputs["model_run"],
        evaluation=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        pushed_model=pusher.outputs["pushed_model"],
        dataset=data.dataset,
        class_names=list(data.class_names),
        hparams=dict(training.hparams),
        code_fingerprint=code_prints.get("EvaluationReport", ""),
    )
    return Pipeline(
        pipeline_name=paths.pipeline_name,
        pipeline_root=paths.pipeline_root,
        components=[
            example_gen,
            *([span_resolver] if span_resolver else []),
            statistics_gen,
            schema_gen,
            *([data_baseline_resolver] if served_baseline else []),
            *([] if served_baseline else [baseline_resolver]),
            example_validator,
            transform,
            trainer,
            *([baseline_resolver] if served_baseline else []),
            evaluator,
            pusher,
            evaluation_report,
        ],
        enable_cache=runtime.enable_cache,
        metadata_connection_config=runtime.metadata_connection_config,
        beam_pipeline_args=list(runtime.beam_pipeline_args),
    )
