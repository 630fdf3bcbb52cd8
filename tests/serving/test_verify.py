"""Verification before publishing, and rollback, on a real exported SavedModel.

The model is cnn_model_fn fitted for a few steps on fixture images and exported
by trainer.export with its verification set; verification loads the staged copy
as the servers do (``serving.signatures.ServableModel``, a session running the
SignatureDefs of ``saved_model.pb``) and calls its signatures for real. Two copies
with a SignatureDef edited the way ``trainer.export.mark_classify_signature`` edits
one show why not ``tf.saved_model.load``: it restores its signatures from the
object graph's functions and never reads the SignatureDefs the servers run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tfx.types import standard_artifacts

from components.pusher.executor import AtomicPushExecutor
from ingest.convert import image_to_example
from ingest.datasets import get_dataset
from serving.publish import (
    ROLLBACK_LOG,
    list_versions,
    publish_saved_model,
    rollback,
    rollback_sources,
    tree_digest,
)
from serving.verify import VERIFICATION_PATH, ModelVerificationError, verify_saved_model
from tests.transform_fixture import build_transform_output
from trainer.export import ASSETS_EXTRA, WARMUP_FILE, export_serving_model
from trainer.hparams import HParams
from trainer.model import build_model
from trainer.model_fn import IMAGE_KEY, cnn_model_fn

CLASS_NAMES = get_dataset("mnist").class_names


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_train, mnist_eval) -> tuple:
    """The model fitted a few steps, its Transform output and the 16 verification examples."""
    images, labels = mnist_train
    tft_output = build_transform_output(tmp_path_factory.mktemp("transform"), images, labels)
    keras.utils.set_random_seed(0)
    model = build_model(cnn_model_fn, HParams().to_params())
    model.fit(
        {IMAGE_KEY: images[:100].astype(np.float32)[..., None] / np.float32(255)},
        labels[:100].astype(np.int64),
        batch_size=20,
        epochs=1,
        verbose=0,
    )
    eval_images, eval_labels = mnist_eval
    examples = [
        image_to_example(image, int(label)).SerializeToString()
        for image, label in zip(eval_images[:16], eval_labels[:16], strict=True)
    ]
    return model, tft_output, examples


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained) -> Path:
    model, tft_output, examples = trained
    directory = tmp_path_factory.mktemp("export") / "model"
    export_serving_model(model, tft_output, str(directory), CLASS_NAMES, examples)
    return directory


@pytest.fixture
def model_copy(tmp_path, exported) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(exported, copy)
    return copy


def listing(base: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(base)), p.stat().st_size) for p in base.rglob("*") if p.is_file()
    )


def test_export_writes_verification_set_and_tf_serving_warmup(exported):
    content = json.loads((exported / VERIFICATION_PATH).read_text())
    assert content["signature"] == "serving_default"
    assert len(content["examples_b64"]) == 16
    probabilities = np.asarray(content["probabilities"])
    assert probabilities.shape == (16, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    from tensorflow_serving.apis import prediction_log_pb2

    records = list(
        tf.data.TFRecordDataset(str(exported / ASSETS_EXTRA / WARMUP_FILE)).as_numpy_iterator()
    )
    # serving_default once per verification example, then every other signature once.
    logs = [prediction_log_pb2.PredictionLog.FromString(record) for record in records]
    assert len(logs) == 16 + 4
    requests = [
        log.predict_log.request if log.HasField("predict_log") else log.classify_log.request
        for log in logs
    ]
    assert [r.model_spec.signature_name for r in requests] == ["serving_default"] * 16 + [
        "predict_images",
        "predict_pixels",
        "predict_pixels_uint8",
        "classify",
    ]
    assert tf.make_ndarray(requests[0].inputs["examples"]).shape == (1,)
    images = tf.make_ndarray(requests[16].inputs["images"])
    assert (images.dtype, images.shape) == (np.float32, (1, 784))
    assert images.min() >= 0.0 and images.max() == 1.0
    assert tf.make_ndarray(requests[17].inputs["images"]).shape == (1, 28, 28)
    assert tf.make_ndarray(requests[18].inputs["images"]).dtype == np.uint8
    assert len(requests[19].input.example_list.examples) == 1


def test_verification_passes_on_the_exported_model(exported):
    result = verify_saved_model(str(exported))
    assert result.examples == 16
    assert result.signatures == (
        "serving_default",
        "predict_images",
        "predict_pixels",
        "predict_pixels_uint8",
        "classify",
    )
    assert result.max_abs_difference < 1e-5


def test_predictions_that_differ_from_the_trainers_are_refused(model_copy):
    path = model_copy / VERIFICATION_PATH
    content = json.loads(path.read_text())
    content["probabilities"][3] = list(reversed(content["probabilities"][3]))
    path.write_text(json.dumps(content))
    with pytest.raises(
        ModelVerificationError,
        match=r"signature serving_default differs from the Trainer's predictions by up to",
    ) as raised:
        verify_saved_model(str(model_copy))
    assert raised.value.path == str(model_copy)
    assert str(raised.value).endswith("; not published")


def test_model_without_the_per_example_checks_is_refused(tmp_path, monkeypatch, trained):
    """A version whose serving_default answers an Example holding two images (no per-example
    check in its graph) is refused, though its answers on good input are the Trainer's."""
    from trainer import export

    model, tft_output, examples = trained
    monkeypatch.setattr(export, "check_example_images", lambda image, input_name: image)
    unchecked = tmp_path / "unchecked"
    export.export_serving_model(model, tft_output, str(unchecked), CLASS_NAMES, examples)
    with pytest.raises(
        ModelVerificationError,
        match=r"signature serving_default answered an Example holding two images instead of "
        r"refusing it \(exported without the per-example input checks\)",
    ):
        verify_saved_model(str(unchecked))


def test_version_with_the_old_signatures_is_refused(tmp_path, exported):
    """A version exported before predict_images took TF Serving's MNIST contract (it has
    predict_images_uint8, no predict_pixels) is refused, saying why: its predict_images
    would read pixels / 255 as 0..255 pixels."""

    def answer(images):
        return {"probabilities": tf.zeros([1, 10])}

    old = tf.Module()
    signatures = {
        name: tf.function(answer, input_signature=[tf.TensorSpec(None, dtype, name="images")])
        for name, dtype in [
            ("serving_default", tf.string),
            ("predict_images", tf.float32),
            ("predict_images_uint8", tf.uint8),
        ]
    }
    tf.saved_model.save(old, str(tmp_path / "old"), signatures=signatures)
    shutil.copytree(exported / ASSETS_EXTRA, tmp_path / "old" / ASSETS_EXTRA)
    with pytest.raises(
        ModelVerificationError,
        match=r"missing signature\(s\) \['predict_pixels', 'predict_pixels_uint8', 'classify'\] "
        r"\(it has predict_images_uint8: exported before predict_images took TF Serving's "
        r"MNIST contract; its predict_images reads pixels as 0\.\.255",
    ):
        verify_saved_model(str(tmp_path / "old"))


def edit_signature_def(
    model_dir: Path, name: str, edit: Callable[[meta_graph_pb2.SignatureDef], None]
) -> None:
    """Rewrite the SignatureDef ``name`` of the MetaGraphDef tagged ``serve`` in
    ``saved_model.pb``, the file TF Serving and the servers read signatures from."""
    path = model_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    (meta_graph,) = [m for m in saved_model.meta_graphs if list(m.meta_info_def.tags) == ["serve"]]
    edit(meta_graph.signature_def[name])
    path.write_bytes(saved_model.SerializeToString())


def test_signature_def_that_answers_otherwise_when_served_is_refused(model_copy):
    """serving_default's SignatureDef names its classes tensor as ``probabilities`` and
    its probabilities as ``classes``: the restored function tf.saved_model.load calls
    still answers the Trainer's probabilities, the session the servers run does not."""

    def swap_outputs(signature_def: meta_graph_pb2.SignatureDef) -> None:
        outputs = signature_def.outputs
        names = outputs["probabilities"].name, outputs["classes"].name
        outputs["classes"].name, outputs["probabilities"].name = names

    edit_signature_def(model_copy, "serving_default", swap_outputs)
    with pytest.raises(
        ModelVerificationError,
        match=r"signature serving_default returned probabilities \(16,\), expected \(16, 10\)",
    ):
        verify_saved_model(str(model_copy))


def test_signature_the_servers_cannot_call_is_refused(model_copy):
    """predict_pixels's input declared as a sparse tensor in its SignatureDef: the servers
    (like TF Serving) cannot feed it, so clients could not call it; tf.saved_model.load
    still calls the restored function with a dense tensor."""

    def make_input_sparse(signature_def: meta_graph_pb2.SignatureDef) -> None:
        images = signature_def.inputs["images"]
        name = images.name
        images.coo_sparse.values_tensor_name = name
        images.coo_sparse.indices_tensor_name = name
        images.coo_sparse.dense_shape_tensor_name = name

    edit_signature_def(model_copy, "predict_pixels", make_input_sparse)
    with pytest.raises(
        ModelVerificationError,
        match=r"signature\(s\) \['predict_pixels'\] cannot be called as the servers call them",
    ):
        verify_saved_model(str(model_copy))


def test_model_that_does_not_load_is_refused(model_copy):
    shutil.rmtree(model_copy / "variables")
    with pytest.raises(ModelVerificationError, match="does not load"):
        verify_saved_model(str(model_copy))


def test_model_without_verification_set_is_refused(model_copy):
    (model_copy / VERIFICATION_PATH).unlink()
    with pytest.raises(ModelVerificationError, match="expected_predictions.json"):
        verify_saved_model(str(model_copy))


def test_failed_verification_publishes_nothing(tmp_path, model_copy, exported):
    base = tmp_path / "serving"
    version, _ = publish_saved_model(exported, base, now=1000, verify=verify_saved_model)
    before = listing(base)
    shutil.rmtree(model_copy / "variables")
    with pytest.raises(ModelVerificationError):
        publish_saved_model(model_copy, base, now=2000, verify=verify_saved_model)
    assert listing(base) == before
    assert list_versions(base) == [version]
    assert [p.name for p in base.iterdir()] == [str(version)]  # no staging left behind


def test_pusher_verifies_the_staged_copy(tmp_path, exported, model_copy):
    def push(model_dir: Path, name: str) -> standard_artifacts.PushedModel:
        model = standard_artifacts.Model()
        model.uri = str(tmp_path / "models" / name)
        shutil.copytree(model_dir, Path(model.uri) / "Format-Serving")
        blessing = standard_artifacts.ModelBlessing()
        blessing.uri = str(tmp_path / "blessing")
        blessing.set_int_custom_property("blessed", 1)
        pushed = standard_artifacts.PushedModel()
        pushed.uri = str(tmp_path / "pushed" / name)
        AtomicPushExecutor().Do(
            {"model": [model], "model_blessing": [blessing]},
            {"pushed_model": [pushed]},
            {
                "push_destination": json.dumps(
                    {"filesystem": {"base_directory": str(tmp_path / "serving")}}
                ),
                "custom_config": json.dumps({"keep_versions": 3}),
            },
        )
        return pushed

    pushed = push(exported, "good")
    assert pushed.get_int_custom_property("pushed") == 1
    before = listing(tmp_path / "serving")
    (model_copy / "variables" / "variables.index").write_bytes(b"not an index")
    with pytest.raises(ModelVerificationError, match="does not load"):
        push(model_copy, "broken")
    assert listing(tmp_path / "serving") == before


def test_rollback_publishes_the_previous_version_as_a_new_one(tmp_path, exported, model_copy):
    base = tmp_path / "serving"
    first, _ = publish_saved_model(exported, base, now=1000)
    (model_copy / "assets.extra" / "marker").write_text("second model")
    second, _ = publish_saved_model(model_copy, base, now=2000)

    new, restored = rollback(base, verify=verify_saved_model)
    assert (restored, list_versions(base)) == (first, [first, second, new])
    assert new > second
    assert tree_digest(base / str(new)) == tree_digest(base / str(first))
    assert rollback_sources(base) == {new: first}
    record = json.loads((base / ROLLBACK_LOG).read_text().splitlines()[0])
    assert (record["version"], record["restores"], record["replaced"]) == (new, first, second)

    # --to an explicit version; history keeps growing
    newer, restored = rollback(base, to=second)
    assert restored == second and newer > new
    assert tree_digest(base / str(newer)) == tree_digest(base / str(second))
    assert rollback_sources(base) == {new: first, newer: second}


def test_rollback_errors_name_the_versions(tmp_path, exported):
    base = tmp_path / "serving"
    with pytest.raises(ValueError, match="no versions to roll back"):
        rollback(base)
    only, _ = publish_saved_model(exported, base, now=1000)
    with pytest.raises(ValueError, match=f"only version {only} exists"):
        rollback(base)
    with pytest.raises(ValueError, match=rf"no version 5; versions present: \[{only}\]"):
        rollback(base, to=5)
    with pytest.raises(ValueError, match="already the current"):
        rollback(base, to=only)
