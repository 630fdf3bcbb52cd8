"""A model good enough to read drawn digits, for the draw-a-digit page's browser test
(``tests/serving/test_ui_browser.py``).

``serving_fixture.exported_versions()`` trains 10 steps: enough to serve, too weak to
read a digit drawn with a mouse. This trains ``cnn_model_fn`` on all 300 MNIST fixture
training images for ``EPOCHS`` epochs, seeded (``keras.utils.set_random_seed``) so every
run trains the same model, and exports it as ``exported_versions()`` does, with the
verification set and TF Serving's warm-up file from the fixture's test images; the same
weights are exported a second time under Fashion-MNIST's class names, a model the page
treats as not reading digits (it offers the warm-up images to pick instead).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tf_keras as keras

from ingest.datasets import get_dataset
from tests.serving_fixture import CLASS_NAMES, mnist_images, serialized_example
from tests.transform_fixture import build_transform_output
from trainer.export import export_serving_model
from trainer.hparams import HParams
from trainer.model import build_model
from trainer.model_fn import IMAGE_KEY, cnn_model_fn

SEED = 0
EPOCHS = 30
WARMUP_EXAMPLES = 16
FASHION_CLASS_NAMES = get_dataset("fashion_mnist").class_names
_built: dict[str, Path] = {}


def trained_export(class_names: str = "mnist") -> Path:
    """The exported SavedModel (built once per test process) with the class names of
    ``class_names``: "mnist" (the digits) or "fashion_mnist"."""
    if "mnist" not in _built:
        root = Path(tempfile.mkdtemp(prefix="ui-model-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        images, labels = mnist_images("train")
        tft_output = build_transform_output(root, images, labels)
        keras.utils.set_random_seed(SEED)
        model = build_model(cnn_model_fn, HParams().to_params())
        model.fit(
            {IMAGE_KEY: images.astype(np.float32)[..., None] / np.float32(255)},
            labels.astype(np.int64),
            batch_size=20,
            epochs=EPOCHS,
            shuffle=True,
            verbose=0,
        )
        eval_images, eval_labels = mnist_images("t10k")
        warmup = [
            serialized_example(image, int(label))
            for image, label in zip(
                eval_images[:WARMUP_EXAMPLES], eval_labels[:WARMUP_EXAMPLES], strict=True
            )
        ]
        for dataset, names in (("mnist", CLASS_NAMES), ("fashion_mnist", FASHION_CLASS_NAMES)):
            path = root / f"export-{dataset}"
            export_serving_model(model, tft_output, str(path), names, warmup)
            _built[dataset] = path
    return _built[class_names]
