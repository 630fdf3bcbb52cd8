"""The draw-a-digit page on the REST port (issue 17): ``GET /`` serves ``draw.html``, and
``GET /ui/samples?model=NAME`` the held-out images a Fashion-MNIST page offers to pick.

The page is one file with no external asset, so it works offline. What it needs to know
about the served models is injected into it as JSON (``<script type="application/json"
id="ui-models">``): per model its name, the version serving, its ten class names (read
from the version's own ``classify`` signature, whose ``classes`` output is the class
names in class order) and whether it reads digits (class names "0".."9"). The page
then predicts through the ordinary ``POST /v1/models/NAME:predict`` on
``predict_pixels_uint8``, like any other client.

The sample images come from the served version's own TF Serving warm-up file
(``assets.extra/tf_serving_warmup_requests``, which the Trainer writes from the
validation split, held out of training), so the page needs no dataset files.
``--no-ui`` leaves these routes out: aiohttp's plain 404 then answers them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from importlib import resources
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from serving.errors import ServingError
from serving.service import InferenceService
from serving.signatures import (
    WARMUP_FILE,
    ServableModel,
    classification_result,
    classification_signature,
    examples_inputs,
)

logger = logging.getLogger(__name__)

PAGE_PATH = "/"
SAMPLES_PATH = "/ui/samples"
PAGE_FILE = "draw.html"
# Where the page's JSON goes: the template holds this placeholder once.
MODELS_PLACEHOLDER = "/*UI_MODELS*/null"
CLASSIFY_SIGNATURE = "classify"
DIGIT_CLASS_NAMES = [str(digit) for digit in range(10)]
IMAGE_SIDE = 28
IMAGE_BYTES = IMAGE_SIDE * IMAGE_SIDE
# More than a page shows; the Trainer writes 16 (a warm-up file may hold up to 1000).
MAX_SAMPLES = 100


def page_template() -> str:
    """``draw.html`` as shipped next to this module."""
    return resources.files(__package__).joinpath(PAGE_FILE).read_text(encoding="utf-8")


def _blank_example() -> bytes:
    """A serialized tf.Example with an all-zero 784-byte ``image``: enough to make the
    ``classify`` signature name its classes (built by hand, so no TensorFlow call)."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["image"].bytes_list.value.append(bytes(IMAGE_BYTES))
    return example.SerializeToString()


def warmup_images(path: str, limit: int = MAX_SAMPLES) -> tuple[list[np.ndarray], list[int | None]]:
    """The distinct 28x28 uint8 images (and their labels, None when absent) of the tf.Examples
    in a TF Serving warm-up file, in file order: those of Predict requests with serialized
    Examples as a string input, and of Classify / Regress / MultiInference requests. Records
    with other inputs (pixel tensors) are skipped. ``[]`` when the file does not exist."""
    import tensorflow as tf
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    if not tf.io.gfile.exists(path):
        return [], []
    images: list[np.ndarray] = []
    labels: list[int | None] = []
    seen: set[bytes] = set()

    def add(serialized: bytes) -> None:
        features = example_pb2.Example.FromString(serialized).features.feature
        values = features["image"].bytes_list.value if "image" in features else []
        if len(values) != 1 or len(values[0]) != IMAGE_BYTES or values[0] in seen:
            return
        seen.add(values[0])
        image = np.frombuffer(values[0], np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)
        images.append(image)
        label = features["label"].int64_list.value if "label" in features else []
        labels.append(int(label[0]) if len(label) == 1 else None)

    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            for proto in log.predict_log.request.inputs.values():
                if proto.dtype == tf.string.as_datatype_enum:
                    for value in tf.make_ndarray(proto).reshape(-1):
                        add(value)
        elif kind in ("classify_log", "regress_log", "multi_inference_log"):
            request_input = getattr(log, kind).request.input
            which = request_input.WhichOneof("kind")
            if which == "example_list":
                examples = request_input.example_list.examples
            elif which == "example_list_with_context":
                examples = request_input.example_list_with_context.examples
            else:
                examples = []
            for example in examples:
                add(example.SerializeToString())
        if len(images) >= limit:
            break
    return images[:limit], labels[:limit]


class DrawPage:
    """The handlers of ``GET /`` and ``GET /ui/samples``, on one InferenceService."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self._template = page_template()
        # By (model, version): its class names, and its warm-up samples.
        self._class_names: dict[tuple[str, int], list[str] | None] = {}
        self._samples: dict[tuple[str, int], bytes] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PAGE_PATH, self.handle_page)
        app.router.add_get(SAMPLES_PATH, self.handle_samples)

    async def _class_names_of(self, servable: ServableModel) -> list[str] | None:
        """The version's class names in class order from its ``classify`` signature; None
        when it has none that answers (a model not made by this project's Trainer)."""
        key = (servable.model_name, servable.version)
        if key not in self._class_names:
            try:
                signature = classification_signature(servable, CLASSIFY_SIGNATURE)
                outputs = await self.service.batcher.run(
                    servable, signature, examples_inputs([_blank_example()])
                )
                classes, _ = classification_result(outputs, 1)
                names = (
                    None
                    if classes is None
                    else [label.decode("utf-8", "replace") for label in classes[0].tolist()]
                )
            except ServingError as error:
                logger.info("no class names for %s version %d: %s", *key, error.message)
                names = None
            self._class_names[key] = names
        return self._class_names[key]

    async def models(self) -> list[dict[str, Any]]:
        """What the page is told about each served model (``version`` None and no class
        names while no version serves)."""
        described = []
        for name, served in sorted(self.service.models.models.items()):
            serving = served.serving
            version, class_names = None, None
            if serving:
                servable = serving[max(serving)]
                version = servable.version
                class_names = await self._class_names_of(servable)
            described.append(
                {
                    "name": name,
                    "version": version,
                    "class_names": class_names,
                    "digits": class_names == DIGIT_CLASS_NAMES,
                }
            )
        return described

    async def handle_page(self, request: web.Request) -> web.Response:
        # "<" escaped so no model name or class name can close the script element.
        blob = orjson.dumps(await self.models()).decode("utf-8").replace("<", "\\u003c")
        return web.Response(
            text=self._template.replace(MODELS_PLACEHOLDER, blob),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    async def handle_samples(self, request: web.Request) -> web.Response:
        name = request.query.get("model")
        if not name:
            served = ", ".join(sorted(self.service.models.models)) or "none"
            return _error(
                f"{SAMPLES_PATH}: expected ?model=NAME, one of the served models ({served})", 400
            )
        served = self.service.models.models.get(name)
        if served is None:
            return _error(
                f"{SAMPLES_PATH}: model {name!r} is not served here; expected one of "
                f"{', '.join(sorted(self.service.models.models))}",
                404,
            )
        serving = served.serving
        if not serving:
            return _error(f"{SAMPLES_PATH}: model {name!r} has no version loaded yet", 503)
        servable = serving[max(serving)]
        key = (name, servable.version)
        if key not in self._samples:
            path = os.path.join(servable.path, WARMUP_FILE)
            try:
                images, labels = await asyncio.get_running_loop().run_in_executor(
                    None, warmup_images, path
                )
            except Exception as error:  # noqa: BLE001 - a broken file is the model's, not a 500
                # TF Serving would not have loaded a version with a broken warm-up file.
                logger.warning("cannot read the samples of %s: %s", path, error)
                images, labels = [], []
            self._samples[key] = orjson.dumps(
                {
                    "model": name,
                    "version": servable.version,
                    "source": WARMUP_FILE,
                    "images": [image.tolist() for image in images],
                    "labels": labels,
                }
            )
        return web.Response(body=self._samples[key], content_type="application/json")


def _error(message: str, status: int) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": message}), status=status, content_type="application/json"
    )
