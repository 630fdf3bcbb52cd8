"""The Trainer component's ``run_fn``: train, then export. Nothing else lives here.

``fn_args.custom_config`` carries ``hparams`` (see ``trainer/hparams.py``) and
``class_names`` (the dataset's ten labels, baked into the serving outputs).

``fn_args.eval_files`` is the validation split (the pipeline's ``EvalArgs``): the
per-epoch validation, the export's verification examples and its warm-up requests
come from it. The test split is left to the Evaluator.
"""

from __future__ import annotations

import logging

import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from components.data_validator import profile as data_profile
from trainer import data, export, train
from trainer.hparams import HParams


def run_fn(fn_args: FnArgs) -> None:
    config = fn_args.custom_config or {}
    hparams = HParams.from_params(config.get("hparams", {}))
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    model, stats = train.train(
        hparams, fn_args.train_files, fn_args.eval_files, tft_output, log_dir=fn_args.model_run_dir
    )
    logging.info("trained: %s", stats)
    export.export_serving_model(
        model,
        tft_output,
        fn_args.serving_model_dir,
        config.get("class_names", [str(i) for i in range(10)]),
        # Validation, not test: nothing taken from the test split goes into the model
        # directory (warm-up requests included), so test stays unseen until the Evaluator.
        verification_examples=first_examples(fn_args.eval_files, export.VERIFICATION_EXAMPLES),
    )
    # Which spans and source files the model learned from, as ExampleGen recorded
    # them: the Pusher copies this onto the pushed version (mnist-tfx versions).
    export.write_training_sources(
        fn_args.serving_model_dir, [*fn_args.train_files, *fn_args.eval_files]
    )
    # The schema and a profile of the training data travel with the model: the
    # ExampleValidator of later runs checks their data against them.
    train_files = data.tfrecord_files(fn_args.train_files)
    export.write_data_contract(
        fn_args.serving_model_dir,
        fn_args.schema_path,
        data_profile.profile_tfrecords(train_files, data.compression(train_files)),
    )


def first_examples(file_patterns: list[str], count: int) -> list[bytes]:
    """The first ``count`` serialized examples of the files (the validation split), in
    file order."""
    files = data.tfrecord_files(file_patterns)
    dataset = tf.data.TFRecordDataset(files, compression_type=data.compression(files))
    return list(dataset.take(count).as_numpy_iterator())
