"""``create_pipeline``: the one definition of the TFX pipeline that every runner
(local, Beam, Airflow, Kubeflow) builds. It takes its paths and settings as typed
objects (``pipeline/settings.py``) and refers to user code (``trainer``) by module
path only.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2, range_config_pb2

from components.data_validator.component import DataValidator
from components.evaluation_report.component import EvaluationReport
from components.example_gen import executor as example_gen_executor
from components.pusher.executor import AtomicPushExecutor
from pipeline.settings import PipelinePaths, PipelineSettings

PREPROCESSING_FN = "trainer.transform.preprocessing_fn"
RUN_FN = "trainer.task.run_fn"
LABEL_KEY = "label"
PREDICTION_KEY = "probabilities"
ACCURACY_METRIC = "sparse_categorical_accuracy"

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
    """Accuracy overall and per true class. Blessed only if overall accuracy reaches
    ``min_accuracy``, does not fall more than ``max_accuracy_drop`` below the latest
    blessed model's (when there is one), and each class reaches its floor in
    ``min_class_accuracy``."""
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


def create_pipeline(paths: PipelinePaths, settings: PipelineSettings) -> tfx.dsl.Pipeline:
    """The pipeline over the latest span of TFRecords, ``paths.data_root/span-N/{train,eval}/``,
    ending in a push to ``paths.serving_model_dir/<version>/``."""
    data, training, release = settings.data, settings.training, settings.release
    runtime = settings.runtime
    # Imports the converted TFRecords; the two splits are the official train and
    # test sets. FileBasedExampleGen's driver (fingerprints, spans, caching) with
    # an executor that copies whole shards and checks every record
    # (components/example_gen/executor.py): 2-3 s on full MNIST instead of ImportExampleGen's 11-16.
    example_gen = FileBasedExampleGen(
        input_base=paths.data_root,
        input_config=example_gen_pb2.Input(
            splits=[
                # Data arrives in spans (mnist-tfx ingest); the driver picks the latest.
                example_gen_pb2.Input.Split(name="train", pattern="span-{SPAN}/train/*"),
                example_gen_pb2.Input.Split(name="eval", pattern="span-{SPAN}/eval/*"),
            ]
        ),
        custom_executor_spec=executor_spec.BeamExecutorSpec(example_gen_executor.Executor),
    ).with_id("ExampleGen")
    # What Transform and the Trainer learn from: the latest span (ExampleGen's output),
    # or with num_spans > 1 the latest num_spans spans ExampleGen has imported, found in
    # ML Metadata by a span resolver. Statistics, validation and evaluation look at the
    # latest span only.
    training_examples = example_gen.outputs["examples"]
    span_resolver = None
    if data.num_spans > 1:
        span_resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.SpanRangeStrategy,
            config={
                "range_config": range_config_pb2.RangeConfig(
                    rolling_range=range_config_pb2.RollingRange(num_spans=data.num_spans)
                )
            },
            # Every Examples artifact ExampleGen has published in this pipeline, not
            # only this run's (a channel from example_gen.outputs would be this run's).
            examples=tfx.dsl.Channel(
                type=tfx.types.standard_artifacts.Examples,
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
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"],
        stats_options=tfdv.StatsOptions(experimental_use_sketch_based_topk_uniques=True),
    )
    # Schema inferred from those statistics.
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
    )
    # The latest model this pipeline blessed: the baseline the candidate must not fall
    # below, and whose training data this run's data is checked against.
    baseline_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    # Anomalies against the schema the baseline was trained under, and drift of the
    # training data against the baseline's (components/data_validator/executor.py). Stops the
    # run on either: Transform waits for it.
    example_validator = DataValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        examples=example_gen.outputs["examples"],
        baseline_model=baseline_resolver.outputs["model"],
        max_drift=settings.drift.max_drift,
        max_label_drift=settings.drift.max_label_drift,
    ).with_id("ExampleValidator")
    # Pixels to float 0..1. Not materialized: the Trainer and the serving model apply
    # the graph themselves, which is cheaper than writing 784 floats per image.
    transform = tfx.components.Transform(
        examples=training_examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        materialize=False,
        disable_statistics=True,
        splits_config=tfx.proto.SplitsConfig(analyze=["train"]),
    )
    transform.add_upstream_node(example_validator)
    # The Estimator-style model_fn on tf_keras; hparams and class names travel in custom_config.
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=training_examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={
            "hparams": dict(training.hparams),
            "class_names": list(data.class_names),
            # Module paths do not change when the code does; this does, so the cache does too.
            "code_fingerprint": training.code_fingerprint,
        },
    )
    # Accuracy overall and per class on the eval split, against the floors and the
    # baseline; blesses the model or not.
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_resolver.outputs["model"],
        schema=schema_gen.outputs["schema"],
        eval_config=make_eval_config(
            release.min_accuracy, release.min_class_accuracy, release.max_accuracy_drop
        ),
        example_splits=["eval"],
    )
    # Publishes a blessed model as the next integer version, atomically, keeping the
    # newest `keep_versions` versions.
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=paths.serving_model_dir)
        ),
        custom_config={"keep_versions": release.keep_versions},
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
    )
    return tfx.dsl.Pipeline(
        pipeline_name=paths.pipeline_name,
        pipeline_root=paths.pipeline_root,
        components=[
            example_gen,
            *([span_resolver] if span_resolver else []),
            statistics_gen,
            schema_gen,
            baseline_resolver,
            example_validator,
            transform,
            trainer,
            evaluator,
            pusher,
            evaluation_report,
        ],
        enable_cache=runtime.enable_cache,
        metadata_connection_config=runtime.metadata_connection_config,
        beam_pipeline_args=list(runtime.beam_pipeline_args),
    )
