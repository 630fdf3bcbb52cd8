"""What TF Serving needs from our export: the ``predict_images`` signature of TF Serving's
MNIST example, the ``classify`` signature and its method name, its scores, and the
SavedModel fingerprint."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tests.serving_fixture import CLASS_NAMES, exported_versions, mnist_images, serialized_example
from trainer.export import CLASSIFY_METHOD_NAME


def test_export_has_classify_signature_with_tf_serving_method_name():
    """The classify signature is marked tensorflow/serving/classify in saved_model.pb, with the
    input and outputs TF Serving's Classify API needs; the other signatures stay predict."""
    export_dir = exported_versions()[0]
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def
    methods = {name: signatures[name].method_name for name in signatures}
    assert methods == {
        "classify": CLASSIFY_METHOD_NAME,
        "serving_default": "tensorflow/serving/predict",
        "predict_images": "tensorflow/serving/predict",
        "predict_pixels": "tensorflow/serving/predict",
        "predict_pixels_uint8": "tensorflow/serving/predict",
        "__saved_model_init_op": "",
    }
    classify = signatures["classify"]
    assert list(classify.inputs) == ["inputs"]
    assert classify.inputs["inputs"].dtype == tf.string.as_datatype_enum
    assert {key: info.dtype for key, info in classify.outputs.items()} == {
        "classes": tf.string.as_datatype_enum,
        "scores": tf.float32.as_datatype_enum,
    }


def test_predict_images_signature_def_is_the_mnist_examples():
    """In saved_model.pb, predict_images takes float ``images`` and gives float ``scores``, the
    keys and dtypes TF Serving's mnist_client.py sends and reads."""
    export_dir = exported_versions()[0]
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    signature = saved_model.meta_graphs[0].signature_def["predict_images"]
    assert {key: info.dtype for key, info in signature.inputs.items()} == {
        "images": tf.float32.as_datatype_enum
    }
    assert signature.outputs["scores"].dtype == tf.float32.as_datatype_enum
    assert [dim.size for dim in signature.outputs["scores"].tensor_shape.dim] == [-1, 10]


def test_classify_signature_scores_equal_probabilities():
    """classify's scores are serving_default's probabilities, its classes the class names."""
    loaded = tf.saved_model.load(str(exported_versions()[0]))
    images, labels = mnist_images()
    examples = tf.constant(
        [serialized_example(im, lb) for im, lb in zip(images[:5], labels[:5], strict=True)]
    )
    classified = loaded.signatures["classify"](inputs=examples)
    predicted = loaded.signatures["serving_default"](examples=examples)
    np.testing.assert_array_equal(classified["scores"].numpy(), predicted["probabilities"].numpy())
    assert classified["classes"].numpy().tolist() == [[n.encode() for n in CLASS_NAMES]] * 5


def test_fingerprint_matches_edited_saved_model():
    """After the method-name edit the fingerprint's checksum is that of the new saved_model.pb."""
    from tensorflow.python.saved_model import pywrap_saved_model

    export_dir = exported_versions()[0]
    written = (export_dir / "fingerprint.pb").read_bytes()
    assert written == pywrap_saved_model.fingerprinting.CreateFingerprintDef(str(export_dir))
