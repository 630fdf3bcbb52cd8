"""Check a SavedModel before it becomes a serving version.

The Trainer writes, inside the SavedModel, ``assets.extra/expected_predictions.json``:
a few serialized validation examples and the probabilities the trained model gave them
in the Trainer's process (``trainer/export.py``). ``verify_saved_model`` loads the
written copy as the servers load a version, ``serving.signatures.ServableModel``: its
graph in a TF1 session (variables restored, main op run), as TF Serving's
SavedModelBundleFactory does, each signature one session call on the tensors its
SignatureDef in ``saved_model.pb`` names, inputs checked by name and dtype first as
the servers check them. Not ``tf.saved_model.load``: that restores the signatures
from the functions of the object graph and never reads the SignatureDefs TF Serving
runs, so a version whose SignatureDefs name other tensors than its functions return
(or tensors a session cannot feed) would pass it and answer differently, or not at
all, once served. Nothing here needs the TF2 object: the reference is the Trainer's
own probabilities, written at export. It calls every signature on those examples:

* ``serving_default`` and ``classify`` on the serialized examples;
* ``predict_images`` (TF Serving's MNIST contract) on the same images as float
  pixels / 255, reading its ``scores``;
* ``predict_pixels`` and ``predict_pixels_uint8`` on the same images as raw pixels;

and requires every answer to match the Trainer's probabilities within
``tolerance`` and to pick the same classes. Each signature must also refuse one
malformed input (an Example holding two images, raw 0..255 pixels sent to
``predict_images``, a pixel tensor of two half images) with INVALID_ARGUMENT, as
the servers answer an InvalidArgumentError of the graph, so no version without the
in-graph input checks is published. The Pusher runs it on the staged copy, after
the files are written and synced and before the rename that makes the version
visible (``serving/publish.py``), so a version that fails to load or answers
differently never appears under the serving base path.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    # Imported when called: serving.signatures imports TensorFlow.
    from serving.signatures import ServableModel

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
    """Load the SavedModel at ``path`` as the servers do and compare its answers with the
    Trainer's. Raises ModelVerificationError naming the path, the signature and the
    difference."""
    import tensorflow as tf

    from serving.signatures import ServableModel

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
        # The model name and version only appear in the servers' request errors.
        servable = ServableModel(os.path.basename(path.rstrip("/")), 0, path)
    except Exception as error:  # noqa: BLE001 - any load failure refuses the version
        raise ModelVerificationError(
            path, f"does not load ({type(error).__name__}: {error})"
        ) from error

    defined = servable.signature_def_map.signature_def
    missing = [name for name in SIGNATURES if name not in defined]
    if missing:
        old = OLD_PIXEL_SIGNATURE in defined
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
    # ServableModel keeps only the signatures a session call can run (TF Serving cannot
    # run the others either): every tensor a dense tensor of the graph, named.
    uncallable = [name for name in SIGNATURES if name not in servable.signatures]
    if uncallable:
        raise ModelVerificationError(
            path,
            f"signature(s) {uncallable} cannot be called as the servers call them: their "
            "SignatureDefs in saved_model.pb name inputs or outputs that are not dense "
            "tensors of the graph (sparse, composite or absent); expected plain named tensors",
        )

    pixels = _image_pixels(examples)
    unit = pixels.reshape(len(pixels), -1).astype(np.float32) * np.float32(1 / 255)
    serialized = np.array(examples, dtype=object)
    calls: dict[str, dict[str, np.ndarray]] = {
        "serving_default": {"examples": serialized},
        MNIST_EXAMPLE_SIGNATURE: {"images": unit},
        "predict_pixels": {"images": pixels.astype(np.float32)},
        "predict_pixels_uint8": {"images": pixels},
        CLASSIFY_SIGNATURE: {"inputs": serialized},
    }
    worst = 0.0
    for name, inputs in calls.items():
        try:
            outputs = _run(servable, name, inputs)
        except Exception as error:  # noqa: BLE001
            raise ModelVerificationError(
                path, f"signature {name} failed on the verification examples ({error})"
            ) from error
        key = SCORES_OUTPUTS.get(name, "probabilities")
        if key not in outputs:
            raise ModelVerificationError(
                path, f"signature {name} has no output {key!r} (it has {sorted(outputs)})"
            )
        got = outputs[key]
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
        classes = got.argmax(axis=1) if name == CLASSIFY_SIGNATURE else outputs["classes"]
        if not np.array_equal(classes, expected.argmax(axis=1)):
            raise ModelVerificationError(
                path, f"signature {name} picks other classes than the Trainer did"
            )
    _check_refuses_malformed_input(path, servable, examples[0], pixels[0])
    return Verification(
        path=path,
        examples=len(examples),
        signatures=tuple(calls),
        max_abs_difference=worst,
    )


def _run(
    servable: ServableModel, name: str, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The signature called as the servers call it: input names and dtypes checked
    (``check_inputs``, ServingError when they are not the SignatureDef's), then one
    session call (an InvalidArgumentError of the graph becomes a ServingError with
    INVALID_ARGUMENT, any other op error is raised as it is)."""
    from serving.signatures import check_inputs

    signature = servable.signatures[name]
    check_inputs(signature, inputs)
    return servable.run(signature, inputs)


def _with_image_bytes(example: bytes, data: bytes) -> bytes:
    """The serialized Example with its ``image`` feature replaced by ``data``."""
    import tensorflow as tf

    parsed = tf.train.Example.FromString(example)
    image = parsed.features.feature["image"].bytes_list
    del image.value[:]
    image.value.append(data)
    return parsed.SerializeToString()


def _check_refuses_malformed_input(
    path: str, servable: ServableModel, example: bytes, image: np.ndarray
) -> None:
    """Each signature must answer one malformed input with INVALID_ARGUMENT: a version
    that answers it would give clients a wrong answer where TF Serving should refuse."""
    import grpc

    from serving.errors import ServingError

    doubled = np.array([_with_image_bytes(example, image.tobytes() * 2)], dtype=object)
    halves = image.reshape(2, -1)
    malformed = {
        "serving_default": ("an Example holding two images", {"examples": doubled}),
        CLASSIFY_SIGNATURE: ("an Example holding two images", {"inputs": doubled}),
        MNIST_EXAMPLE_SIGNATURE: (
            "raw 0..255 pixels instead of pixels / 255",
            {"images": np.full((1, image.size), 255, np.float32)},
        ),
        "predict_pixels": ("pixels of shape [2, 392]", {"images": halves.astype(np.float32)}),
        "predict_pixels_uint8": ("pixels of shape [2, 392]", {"images": halves}),
    }
    for name, (what, inputs) in malformed.items():
        try:
            _run(servable, name, inputs)
        except ServingError as error:
            # The names and dtypes passed check_inputs on the verification examples, so
            # INVALID_ARGUMENT here is the graph refusing the input.
            if error.code == grpc.StatusCode.INVALID_ARGUMENT:
                continue
            raise ModelVerificationError(
                path,
                f"signature {name} answered {what} with {error.code.name} ({error.message}); "
                "expected INVALID_ARGUMENT",
            ) from error
        except Exception as error:  # noqa: BLE001 - the servers would answer it with a 500
            raise ModelVerificationError(
                path,
                f"signature {name} failed on {what} with {type(error).__name__} ({error}); "
                "expected INVALID_ARGUMENT",
            ) from error
        raise ModelVerificationError(
            path,
            f"signature {name} answered {what} instead of refusing it "
            "(exported without the per-example input checks)",
        )
