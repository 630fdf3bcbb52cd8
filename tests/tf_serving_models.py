"""SavedModels like the ones TF Serving's own tests serve, built here in the test session.

TF Serving's repository tests its server on ``half_plus_two`` models (y = 0.5 x + 2)
and documents an MNIST export (``tensorflow_serving/example/mnist_saved_model.py``).
These builders make equivalent models from the facts TF Serving states about them
(signature names and method names, input and output keys, tensor names, dtypes
and shapes, the asset file, the version directory ``00000123``), so the embedded
server can be checked against TF Serving's documented answers without copying
any file of that repository:

- ``half_plus_two_tf1``: a TF1 graph saved with ``tf.compat.v1`` SavedModelBuilder:
  ``serving_default`` (predict, ``x`` -> ``y``), ``classify_x_to_y`` (classify,
  serialized ``tf.Example`` -> ``scores``), ``regress_x_to_y`` and ``regress_x_to_y2``
  (regress, Examples -> ``outputs`` y = 0.5 x + 2 and y2 = 0.5 x + 3) and
  ``regress_x2_to_y3`` (regress, float ``x2`` -> y3 = 0.5 x2 + 3); an asset file
  ``foo.txt`` and a main op that assigns its name to a variable.
- ``half_plus_two_tf2``: the same computations as a ``tf.Module`` saved with
  ``tf.saved_model.save`` (every signature's method name is then predict, as TF2
  writes it).
- ``mnist_example``: softmax regression on 784 pixels in [0, 1] exported as TF
  Serving's MNIST example exports it: ``predict_images`` (predict, ``images`` float32
  [None, 784] -> ``scores`` float32 [None, 10]) and a classify ``serving_default``
  on serialized ``tf.Example`` with feature ``x`` (784 floats) -> ``classes`` (the
  digits as strings, by a lookup table the main op initialises) and ``scores``
  (top-10 probabilities); trained a few steps on the committed fixture images.
- ``asset_vocabulary_tf1``: a TF1 graph whose only signature looks ids up in a
  vocabulary read from an asset file by a table a legacy init op initialises.

``base_path(...)`` puts one of them under a fresh base path as version directory
``00000123`` (TF Serving's layout), built once per test process and copied.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from ingest.idx import read_idx_pair

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mnist"
VERSION_DIR = "00000123"
VERSION = 123
PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
ASSET_NAME = "foo.txt"
ASSET_TEXT = "asset-file-contents"
VOCABULARY = ["zero", "one", "two", "three"]
MNIST_PIXELS = 784
MNIST_TRAIN_STEPS = 60
_built: dict[str, Path] = {}
_root: list[Path] = []


def _workdir() -> Path:
    if not _root:
        _root.append(Path(tempfile.mkdtemp(prefix="tf-serving-models-")))
        atexit.register(shutil.rmtree, _root[0], ignore_errors=True)
    return _root[0]


def example(**features: list[float]) -> tf.train.Example:
    """A tf.Example of float features, e.g. ``example(x=[2.0])``."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                name: tf.train.Feature(float_list=tf.train.FloatList(value=values))
                for name, values in features.items()
            }
        )
    )


def _info(tensor: tf.Tensor):
    return tf.compat.v1.saved_model.utils.build_tensor_info(tensor)


def _signature(inputs: dict, outputs: dict, method: str):
    return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
        {key: _info(t) for key, t in inputs.items()},
        {key: _info(t) for key, t in outputs.items()},
        method,
    )


def half_plus_two_tf1(export_dir: Path) -> None:
    """The TF1 half_plus_two graph, saved with SavedModelBuilder into ``export_dir``."""
    source_assets = export_dir.parent / f"{export_dir.name}-assets"
    source_assets.mkdir(parents=True)
    (source_assets / ASSET_NAME).write_text(ASSET_TEXT)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        slope = tf.compat.v1.Variable(0.5, name="a")
        offset_y = tf.compat.v1.Variable(2.0, name="b")
        offset_y2 = tf.compat.v1.Variable(3.0, name="c")
        # Separate variables for the x2 path, as TF Serving's model has them.
        slope_x2 = tf.compat.v1.Variable(0.5, name="a2")
        offset_y3 = tf.compat.v1.Variable(3.0, name="c2")
        # No static shape: TF Serving's metadata lists tf_example:0 with unknown rank.
        serialized = tf.compat.v1.placeholder(tf.string, name="tf_example")
        parsed = tf.io.parse_example(
            tf.reshape(serialized, [-1]),
            {
                "x": tf.io.FixedLenFeature([1], tf.float32),
                "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        x = tf.identity(parsed["x"], name="x")
        x2 = tf.identity(parsed["x2"], name="x2")
        y = tf.identity(slope * x + offset_y, name="y")
        y2 = tf.identity(slope * x + offset_y2, name="y2")
        y3 = tf.identity(slope_x2 * x2 + offset_y3, name="y3")

        asset_path = tf.constant(str(source_assets / ASSET_NAME))
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS, asset_path)
        asset_name = tf.compat.v1.Variable(
            ASSET_NAME, name="filename_tensor", trainable=False, collections=[]
        )
        main_op = tf.group(asset_name.assign(ASSET_NAME))
        session.run(tf.compat.v1.global_variables_initializer())

        builder = tf.compat.v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            session,
            [tf.compat.v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                "serving_default": _signature({"x": x}, {"y": y}, PREDICT),
                "classify_x_to_y": _signature({"inputs": serialized}, {"scores": y}, CLASSIFY),
                "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": y}, REGRESS),
                "regress_x_to_y2": _signature({"inputs": serialized}, {"outputs": y2}, REGRESS),
                "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, REGRESS),
            },
            assets_collection=tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS),
            main_op=main_op,
        )
        builder.save()
    shutil.rmtree(source_assets)


class _HalfPlusTwo(tf.Module):
    """The same model for tf.saved_model.save: one tf.function per signature."""

    def __init__(self, asset_file: Path) -> None:
        super().__init__()
        self.a = tf.Variable(0.5, name="a")
        self.b = tf.Variable(2.0, name="b")
        self.c = tf.Variable(3.0, name="c")
        self.asset = tf.saved_model.Asset(str(asset_file))

    def _x(self, serialized: tf.Tensor) -> tf.Tensor:
        spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}
        return tf.io.parse_example(serialized, spec)["x"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_x_to_y(self, serialized):
        return {"scores": self.a * self._x(serialized) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_x_to_y(self, serialized):
        return {"outputs": self.a * self._x(serialized) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_x_to_y2(self, serialized):
        return {"outputs": self.a * self._x(serialized) + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="inputs")])
    def regress_x2_to_y3(self, x2):
        return {"outputs": self.a * x2 + self.c}


def half_plus_two_tf2(export_dir: Path) -> None:
    """The half_plus_two model as native TF2, saved with tf.saved_model.save."""
    source_assets = export_dir.parent / f"{export_dir.name}-assets"
    source_assets.mkdir(parents=True)
    (source_assets / ASSET_NAME).write_text(ASSET_TEXT)
    module = _HalfPlusTwo(source_assets / ASSET_NAME)
    tf.saved_model.save(
        module,
        str(export_dir),
        signatures={
            "serving_default": module.predict,
            "classify_x_to_y": module.classify_x_to_y,
            "regress_x_to_y": module.regress_x_to_y,
            "regress_x_to_y2": module.regress_x_to_y2,
            "regress_x2_to_y3": module.regress_x2_to_y3,
        },
    )
    shutil.rmtree(source_assets)


def mnist_fixture(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fixture pixels as float32 [n, 784] in [0, 1] (as TF Serving's MNIST example reads
    them) and int labels."""
    images, labels = read_idx_pair(
        FIXTURE / f"{split}-images-idx3-ubyte.gz", FIXTURE / f"{split}-labels-idx1-ubyte.gz"
    )
    pixels = images.reshape(len(images), MNIST_PIXELS).astype(np.float32) / np.float32(255)
    return pixels, labels.astype(np.int64)


def mnist_example(export_dir: Path) -> None:
    """Softmax regression trained on the fixture, exported as TF Serving's MNIST example:
    a TF1 graph with ``predict_images`` and a classify ``serving_default``."""
    pixels, labels = mnist_fixture("train")
    one_hot = np.eye(10, dtype=np.float32)[labels]
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        tf.compat.v1.set_random_seed(0)
        serialized = tf.compat.v1.placeholder(tf.string, name="tf_example")
        parsed = tf.io.parse_example(
            tf.reshape(serialized, [-1]), {"x": tf.io.FixedLenFeature([MNIST_PIXELS], tf.float32)}
        )
        x = tf.identity(parsed["x"], name="x")
        target = tf.compat.v1.placeholder(tf.float32, [None, 10])
        weights = tf.compat.v1.Variable(tf.zeros([MNIST_PIXELS, 10]))
        bias = tf.compat.v1.Variable(tf.zeros([10]))
        y = tf.nn.softmax(tf.matmul(x, weights) + bias, name="y")
        loss = -tf.reduce_sum(target * tf.math.log(y + 1e-10))
        train = tf.compat.v1.train.GradientDescentOptimizer(0.01).minimize(loss)
        top_scores, top_indices = tf.nn.top_k(y, 10)
        digits = tf.compat.v1.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.range(10, dtype=tf.int64), tf.constant([str(d) for d in range(10)])
            ),
            default_value="",
        )
        top_classes = digits.lookup(tf.cast(top_indices, tf.int64))
        session.run(tf.compat.v1.global_variables_initializer())
        order = np.random.default_rng(0).permutation(len(pixels))
        for step in range(MNIST_TRAIN_STEPS):
            batch = order[(step * 50) % len(pixels) :][:50]
            session.run(train, {x: pixels[batch], target: one_hot[batch]})

        builder = tf.compat.v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            session,
            [tf.compat.v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                "predict_images": _signature({"images": x}, {"scores": y}, PREDICT),
                "serving_default": _signature(
                    {"inputs": serialized},
                    {"classes": top_classes, "scores": top_scores},
                    CLASSIFY,
                ),
            },
            main_op=tf.compat.v1.tables_initializer(),
            strip_default_attrs=True,
        )
        builder.save()


def asset_vocabulary_tf1(export_dir: Path) -> None:
    """A TF1 graph whose ``serving_default`` maps int64 ``ids`` to the words of an asset
    file (one per line) through a table that a legacy init op fills from that file."""
    source_assets = export_dir.parent / f"{export_dir.name}-assets"
    source_assets.mkdir(parents=True)
    vocabulary_file = source_assets / "vocabulary.txt"
    vocabulary_file.write_text("\n".join(VOCABULARY) + "\n")
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        asset_path = tf.constant(str(vocabulary_file), name="vocabulary_path")
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS, asset_path)
        table = tf.compat.v1.lookup.StaticHashTable(
            tf.compat.v1.lookup.TextFileInitializer(
                asset_path,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
            ),
            default_value="?",
        )
        ids = tf.compat.v1.placeholder(tf.int64, [None], name="ids")
        words = tf.identity(table.lookup(ids), name="words")
        builder = tf.compat.v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            session,
            [tf.compat.v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                "serving_default": _signature({"ids": ids}, {"words": words}, PREDICT)
            },
            assets_collection=tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS),
            legacy_init_op=tf.compat.v1.tables_initializer(),
        )
        builder.save()
    shutil.rmtree(source_assets)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "half_plus_two": half_plus_two_tf1,
    "half_plus_two_tf2": half_plus_two_tf2,
    "mnist_example": mnist_example,
    "asset_vocabulary": asset_vocabulary_tf1,
}


def built(kind: str) -> Path:
    """The SavedModel directory of one kind, built once per test process."""
    if kind not in _built:
        export_dir = _workdir() / "built" / kind
        export_dir.parent.mkdir(parents=True, exist_ok=True)
        BUILDERS[kind](export_dir)
        _built[kind] = export_dir
    return _built[kind]


def base_path(root: Path, kind: str, version_dir: str = VERSION_DIR, name: str = "") -> Path:
    """A base path ``root/name`` (default ``root/kind``) holding a copy of the model as
    ``version_dir``."""
    base = root / (name or kind)
    shutil.copytree(built(kind), base / version_dir)
    return base


def copy_version(kind: str, base: Path, version_dir: str) -> Path:
    """Another copy of the model as ``base/version_dir`` (written under a hidden name and
    renamed, so the watcher never sees it half-copied)."""
    staging = base / f".incoming-{version_dir}"
    shutil.copytree(built(kind), staging)
    final = base / version_dir
    os.rename(staging, final)
    return final
