"""Check a SavedModel before it becomes a serving version.

The Trainer writes, inside the SavedModel, ``assets.extra/expected_predictions.json``:
a few serialized validation examples and the probabilities the trained model gave them
in the Trainer's process (``trainer/export.py``). ``verify_saved_model`` loads the
written copy as a TF2 program would (``tf.saved_model.load``; TF Serving and the
embedded server run it in a session instead, checked by ``tests/serving``) and calls
every signature on those examples:

* ``serving_default`` and ``classify`` on the serialized examples;
* ``predict_images`` (TF Serving's MNIST contract) on the same images as float
  pixels / 255, reading its ``scores``;
* ``predict_pixels`` and ``predict_pixels_uint8`` on the same images as raw pixels;

and requires every answer to match the Trainer's probabilities within
``tolerance`` and to pick the same classes. Each signature must also refuse one
malformed input (an Example holding two images, raw 0..255 pixels sent to
``predict_images``, a pixel tensor of two half images) with InvalidArgumentError,
so no version without the in-graph input checks is published. The Pusher runs it
on the staged copy, after the files are written and synced and before the rename
that makes the version visible (``serving/publish.py``), so a version that fails
to load or answers differently never appears under the serving base path.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

VERIFICATION_PATH = os.path.join("assets.extra", "expected_predictions.json")
MNIST_EXAMPLE_SIGNATURE = "predict_images"
PIXEL_SIGNATURES = ("predict_pixels", "predict_pixels_uint8")
CLASSIFY_SIGNATURE = "classify"
SIGNATURES = ("serving_default", MNIST_EXAMPLE_SIGNATURE, *PIXEL_SIGNATURES, CLASSIFY_SIGNATURE)
# The output holding the class probabilities, by signature (``probabilities`` otherwise).
SCORES_OUTPUTS = {MNIST_EXAMPLE_SIGNATURE: "scores", CLASSIFY_SIGNATURE: "scores"}
# Signatures of versions exported before predict_images took TF Serving's MNIST contract.
OLD_PIXEL_SIGNATURE = "predict_images_uint8"
DEFAULT_TOLERANCE = 1e-4


class ModelVerificationError(RuntimeError):
    """The SavedModel at ``path`` failed its check; the message says which and why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}; not published")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Verification:
    path: str
    examples: int
    signatures: tuple[str, ...]
    max_abs_difference: float


def _image_pixels(serialized: list[bytes]) -> np.ndarray:
    from ingest.convert import parse_example_bytes

    return np.stack([parse_example_bytes(example)[0] for example in serialized])


def verify_saved_model(path: str, tolerance: float = DEFAULT_TOLERANCE) -> Verification:
    """Load the SavedModel at ``path`` and compare its answers with the Trainer's.
    Raises ModelVerificationError naming the path, the signature and the difference."""
    import tensorflow as tf

    # tf.io.gfile: the staged copy may be on an object store (serving/object_store.py).
    expected_file = os.path.join(path, VERIFICATION_PATH)
    if not tf.io.gfile.exists(expected_file):
        raise ModelVerificationError(
            path, f"no {VERIFICATION_PATH}: the Trainer's predictions to verify against are missing"
        )
    with tf.io.gfile.GFile(expected_file, "r") as f:
        content = json.load(f)
    examples = [base64.b64decode(text) for text in content["examples_b64"]]
    expected = np.asarray(content["probabilities"], dtype=np.float32)
    if not examples or expected.shape != (len(examples), 10):
        raise ModelVerificationError(
            path,
            f"{VERIFICATION_PATH} holds {len(examples)} examples and probabilities of shape "
            f"{expected.shape}; expected N > 0 examples and [N, 10]",
        )
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001 - any load failure refuses the version
        raise ModelVerificationError(
            path, f"does not load ({type(error).__name__}: {error})"
        ) from error

    missing = [name for name in SIGNATURES if name not in loaded.signatures]
    if missing:
        old = OLD_PIXEL_SIGNATURE in loaded.signatures
        raise ModelVerificationError(
            path,
            f"missing signature(s) {missing}"
            + (
                f" (it has {OLD_PIXEL_SIGNATURE}: exported before predict_images took TF "
                "Serving's MNIST contract; its predict_images reads pixels as 0..255 and would "
                "answer clients sending pixels / 255 wrongly)"
                if old
                else ""
            ),
        )

    pixels = _image_pixels(examples)
    unit = pixels.reshape(len(pixels), -1).astype(np.float32) * np.float32(1 / 255)
    calls: dict[str, Callable] = {
        "serving_default": lambda f: f(examples=tf.constant(examples)),
        MNIST_EXAMPLE_SIGNATURE: lambda f: f(images=tf.constant(unit)),
        "predict_pixels": lambda f: f(images=tf.constant(pixels.astype(np.float32))),
        "predict_pixels_uint8": lambda f: f(images=tf.constant(pixels)),
        CLASSIFY_SIGNATURE: lambda f: f(inputs=tf.constant(examples)),
    }
    worst = 0.0
    for name, call in calls.items():
        try:
            outputs = call(loaded.signatures[name])
        except Exception as error:  # noqa: BLE001
            raise ModelVerificationError(
                path, f"signature {name} failed on the verification examples ({error})"
            ) from error
        key = SCORES_OUTPUTS.get(name, "probabilities")
        if key not in outputs:
            raise ModelVerificationError(
                path, f"signature {name} has no output {key!r} (it has {sorted(outputs)})"
            )
        got = outputs[key].numpy()
        if got.shape != expected.shape:
            raise ModelVerificationError(
                path,
                f"signature {name} returned {key} {got.shape}, expected {expected.shape}",
            )
        difference = float(np.max(np.abs(got - expected)))
        worst = max(worst, difference)
        if difference > tolerance:
            raise ModelVerificationError(
                path,
                f"signature {name} differs from the Trainer's predictions by up to "
                f"{difference:.3g} (tolerance {tolerance:g})",
            )
        # classify's classes are the class names of every score; the others' the argmax.
        classes = got.argmax(axis=1) if name == CLASSIFY_SIGNATURE else outputs["classes"].numpy()
        if not np.array_equal(classes, expected.argmax(axis=1)):
            raise ModelVerificationError(
                path, f"signature {name} picks other classes than the Trainer did"
            )
    _check_refuses_malformed_input(path, loaded, examples[0], pixels[0])
    return Verification(
        path=path,
        examples=len(examples),
        signatures=tuple(calls),
        max_abs_difference=worst,
    )


def _with_image_bytes(example: bytes, data: bytes) -> bytes:
    """The serialized Example with its ``image`` feature replaced by ``data``."""
    import tensorflow as tf

    parsed = tf.train.Example.FromString(example)
    image = parsed.features.feature["image"].bytes_list
    del image.value[:]
    image.value.append(data)
    return parsed.SerializeToString()


def _check_refuses_malformed_input(path: str, loaded, example: bytes, image: np.ndarray) -> None:
    """Each signature must answer one malformed input with InvalidArgumentError: a version
    that answers it would give clients a wrong answer where TF Serving should refuse."""
    import tensorflow as tf

    doubled = _with_image_bytes(example, image.tobytes() * 2)
    halves = image.reshape(2, -1)
    malformed = {
        "serving_default": (
            "an Example holding two images",
            lambda f: f(examples=tf.constant([doubled])),
        ),
        CLASSIFY_SIGNATURE: (
            "an Example holding two images",
            lambda f: f(inputs=tf.constant([doubled])),
        ),
        MNIST_EXAMPLE_SIGNATURE: (
            "raw 0..255 pixels instead of pixels / 255",
            lambda f: f(images=tf.constant(np.full((1, image.size), 255, np.float32))),
        ),
        "predict_pixels": (
            "pixels of shape [2, 392]",
            lambda f: f(images=tf.constant(halves.astype(np.float32))),
        ),
        "predict_pixels_uint8": (
            "pixels of shape [2, 392]",
            lambda f: f(images=tf.constant(halves)),
        ),
    }
    for name, (what, call) in malformed.items():
        try:
            call(loaded.signatures[name])
        except tf.errors.InvalidArgumentError:
            continue
        raise ModelVerificationError(
            path,
            f"signature {name} answered {what} instead of refusing it "
            "(exported without the per-example input checks)",
        )
