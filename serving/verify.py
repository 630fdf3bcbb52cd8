"""Check a SavedModel before it becomes a serving version.

The Trainer writes, inside the SavedModel, ``assets.extra/expected_predictions.json``:
a few serialized eval examples and the probabilities the trained model gave them
in the Trainer's process (``trainer/export.py``). ``verify_saved_model`` loads the
written copy the way a server would (``tf.saved_model.load``) and calls both kinds
of signature on those examples:

* ``serving_default`` on the serialized examples;
* ``predict_images`` and ``predict_images_uint8`` on the same images as raw pixels;

and requires every answer to match the Trainer's probabilities within
``tolerance`` and to pick the same classes. The Pusher runs it on the staged copy,
after the files are written and synced and before the rename that makes the
version visible (``serving/publish.py``), so a version that fails to load or
answers differently never appears under the serving base path.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

import numpy as np

VERIFICATION_PATH = os.path.join("assets.extra", "expected_predictions.json")
PIXEL_SIGNATURES = ("predict_images", "predict_images_uint8")
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

    expected_file = os.path.join(path, VERIFICATION_PATH)
    if not os.path.isfile(expected_file):
        raise ModelVerificationError(
            path, f"no {VERIFICATION_PATH}: the Trainer's predictions to verify against are missing"
        )
    with open(expected_file, encoding="utf-8") as f:
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

    missing = [
        name for name in ("serving_default", *PIXEL_SIGNATURES) if name not in loaded.signatures
    ]
    if missing:
        raise ModelVerificationError(path, f"missing signature(s) {missing}")

    pixels = _image_pixels(examples)
    calls = {
        "serving_default": lambda f: f(examples=tf.constant(examples)),
        "predict_images": lambda f: f(images=tf.constant(pixels.astype(np.float32))),
        "predict_images_uint8": lambda f: f(images=tf.constant(pixels)),
    }
    worst = 0.0
    for name, call in calls.items():
        try:
            outputs = call(loaded.signatures[name])
        except Exception as error:  # noqa: BLE001
            raise ModelVerificationError(
                path, f"signature {name} failed on the verification examples ({error})"
            ) from error
        got = outputs["probabilities"].numpy()
        if got.shape != expected.shape:
            raise ModelVerificationError(
                path,
                f"signature {name} returned probabilities {got.shape}, expected {expected.shape}",
            )
        difference = float(np.max(np.abs(got - expected)))
        worst = max(worst, difference)
        if difference > tolerance:
            raise ModelVerificationError(
                path,
                f"signature {name} differs from the Trainer's predictions by up to "
                f"{difference:.3g} (tolerance {tolerance:g})",
            )
        classes = outputs["classes"].numpy()
        if not np.array_equal(classes, expected.argmax(axis=1)):
            raise ModelVerificationError(
                path, f"signature {name} picks other classes than the Trainer did"
            )
    return Verification(
        path=path,
        examples=len(examples),
        signatures=tuple(calls),
        max_abs_difference=worst,
    )
