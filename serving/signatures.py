"""One loaded model version and TF Serving's rules for calling it.

``ServableModel`` loads a SavedModel and keeps its SignatureDefs as TF Serving reads
them from ``saved_model.pb`` (for metadata and for checking requests). Every
SavedModel, TF1 (``tf.compat.v1`` SavedModelBuilder) or TF2 (``tf.saved_model.save``),
is loaded as TF Serving loads it: its graph into a session (variables restored, its
main op or legacy init op run, so tables are filled and assets found in this
version's ``assets/``), and a signature runs as one session call feeding the tensors
its inputs name (``x:0`` for the key ``x``, also an intermediate tensor) and fetching
its outputs, with no shape check of its own. ``tf.saved_model.load`` cannot import
some graphs TF Serving serves (its test model ``half_plus_three``, from TF 1.0), its
functions check shapes TF Serving does not, and calling them costs more: for the
pushed MNIST model a batch of 32 took 5.1-5.3 ms as a restored function and 4.6 ms as
a session call, one image 1.65-1.83 against 1.35-1.42 ms, with equal outputs
(2026-11-27). A signature whose tensors are not plain named tensors (sparse or
composite) cannot be fed this way and is not served, as in TF Serving.

The rules TF Serving applies per API live here too, so requests and warm-up follow
the same ones: Predict (``output_filter``), Classify (one input ``inputs``, outputs
``classes`` and/or ``scores``, [N, K]), Regress (``inputs`` -> ``outputs``, [N] or
[N, 1] floats) and MultiInference, with TF Serving's error messages. As in TF
Serving's default (``--enable_signature_method_name_check`` off) a signature runs
for Classify or Regress when its keys fit, whatever its method name (TF2 writes
``tensorflow/serving/predict`` for every signature); one whose keys do not fit and
whose method name is not the API's is refused with TF Serving's method-name error.

Warm-up is TF Serving's: the version's own ``assets.extra/tf_serving_warmup_requests``
(PredictionLog records: predict, classify, regress and multi_inference logs, at
most 1000) is replayed before the version serves, and any failure fails the load.
A version without the file loads without warm-up. Versions, policies and the
directory watcher are ``versions.py``; the wire formats are ``rest_format.py`` and
``grpc_api.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, rewriter_config_pb2, saved_model_pb2
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.errors import ServingError, invalid_argument

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SERVING_TAGS = ("serve",)
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# The keys TF Serving's Classify and Regress APIs use (signature_constants).
EXAMPLES_INPUT = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_OUTPUTS = "outputs"
# Not a signature a client can call; TF Serving lists it in metadata all the same.
INIT_OP_SIGNATURE = "__saved_model_init_op"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# TF Serving refuses a warm-up file with more records than this (WarmupConsts).
MAX_WARMUP_RECORDS = 1000


@dataclass(frozen=True)
class TensorInfo:
    """One named input or output of a signature."""

    key: str
    dtype: tf.DType
    # None when the signature leaves the rank unknown; -1 for an unknown dimension.
    shape: tuple[int, ...] | None

    # Looked up once: every request checks its arrays against these.
    @functools.cached_property
    def is_string(self) -> bool:
        return self.dtype == tf.string

    @functools.cached_property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of the input's arrays (object for strings)."""
        return np.dtype(object) if self.is_string else np.dtype(self.dtype.as_numpy_dtype)


@dataclass(frozen=True)
class Signature:
    """A callable signature: its name, method and typed inputs and outputs."""

    name: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]

    def unshaped(self) -> Signature:
        """The same signature with every input's shape unknown. TF Serving's REST API
        takes only the dtypes from a signature (json_tensor.cc) and leaves shapes to the
        model, which may accept more than its SignatureDef states (a TF1 graph fed at an
        intermediate tensor takes [3] for [-1, 1])."""
        return self._unshaped

    @functools.cached_property
    def _unshaped(self) -> Signature:
        inputs = {key: dataclasses.replace(info, shape=None) for key, info in self.inputs.items()}
        return dataclasses.replace(self, inputs=inputs)


def _tensor_info(key: str, proto: meta_graph_pb2.TensorInfo) -> TensorInfo:
    shape = None
    if not proto.tensor_shape.unknown_rank:
        shape = tuple(int(dim.size) for dim in proto.tensor_shape.dim)
    return TensorInfo(key, tf.dtypes.as_dtype(proto.dtype), shape)


def dtype_name(dtype: tf.DType) -> str:
    """TF's own name of a dtype, e.g. DT_FLOAT, as TF Serving's errors and metadata say it."""
    return types_pb2.DataType.Name(dtype.as_datatype_enum)


def read_signature_defs(saved_model_dir: str) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef TF Serving serves: the one tagged exactly ``serve``."""
    saved_model = saved_model_pb2.SavedModel()
    # tf.io.gfile: a version may live on an object store (serving/object_store.py).
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(SERVING_TAGS):
            return meta_graph
    found = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise ValueError(f"{saved_model_dir}: no MetaGraphDef tagged {{serve}} (found {found})")


def clean_op_error(message: str) -> str:
    """The part of a TensorFlow op error a client can act on, without graph noise."""
    kept = []
    for line in message.splitlines():
        line = line.strip()
        if not line or line.startswith(("Graph execution error", "Detected at node", "<stack")):
            continue
        if line.startswith(("[[{{node", "[[{{function_node", "File ")):
            continue
        # Eager errors end in "[Op:...]", session errors in "[[{{function_node f}}{{node n}}]]".
        line = re.sub(r"\s*\[\[\{\{(function_)?node .*\]\]$", "", line)
        kept.append(re.sub(r"\s*\[Op:[^\]]*\]$", "", line))
    return " ".join(kept) or message


BFLOAT16 = "bfloat16"


class _Session:
    """A SavedModel (TF1 or TF2) in a session, as TF Serving runs it: each signature is
    one session call feeding its input tensors and fetching its output tensors.

    ``mixed_precision="bfloat16"`` is TF Serving's ``--mixed_precision=bfloat16``:
    grappler's oneDNN bfloat16 pass (``auto_mixed_precision_onednn_bfloat16``) runs
    the model's matrix products and convolutions in bfloat16, on CPUs with
    AVX512_BF16 or AMX (elsewhere TensorFlow logs that it cannot and leaves the model
    in float32). TF Serving keeps the variables, so the pass casts every float32
    weight to bfloat16 on every call; for a model without lookup tables or assets the
    graph is frozen first (variables become constants, ``convert_variables_to_
    constants``), so those casts fold into bfloat16 constants once, at load. Measured
    on the pushed MNIST model (2026-11-27, a CPU with AMX), ms per call for 1 / 12 /
    32 images: float32 1.54 / 2.87 / 4.93, TF Serving's way 2.14 / 2.98 / 3.59,
    frozen 1.34 / 1.82 / 2.21. Answers move by bfloat16's rounding (8 bits of
    mantissa): probabilities by up to ~0.005 there, classes alike on those images."""

    def __init__(self, path: str, signature_defs: Any, mixed_precision: str | None = None) -> None:
        config = self._config(mixed_precision)
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=config)
        # Restores the variables and runs the main op (or legacy init op) with the asset
        # paths of this directory. TensorFlow marks this TF1 loader deprecated in favour
        # of tf.saved_model.load, which cannot run a SavedModel as TF Serving does (see
        # above): its warning would only tell the server's users to do the wrong thing.
        with self._graph.as_default(), deprecation.silence():
            meta_graph = tf.compat.v1.saved_model.loader.load(
                self._session, list(SERVING_TAGS), path
            )
        self._graph.finalize()
        self._calls = self._callables(signature_defs)
        # How the model runs: "float32", or with bfloat16 "frozen" or "variables".
        self.precision = "float32"
        if mixed_precision == BFLOAT16:
            self.precision = "variables"
            if _freezable(self._graph, meta_graph):
                self._freeze(signature_defs, config)

    @staticmethod
    def _config(mixed_precision: str | None) -> Any:
        # The server's TensorFlow thread settings (--tf-*-op-threads) apply here too.
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
            inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        )
        if mixed_precision == BFLOAT16:
            config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
                rewriter_config_pb2.RewriterConfig.ON
            )
        elif mixed_precision is not None:
            raise ValueError(f"mixed precision {mixed_precision!r}: expected {BFLOAT16!r}")
        return config

    def _callables(self, signature_defs: Any) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        calls = {}
        for name, signature_def in signature_defs.items():
            try:
                feeds = {k: self._tensor(i) for k, i in signature_def.inputs.items()}
                fetches = {k: self._tensor(i) for k, i in signature_def.outputs.items()}
            except (KeyError, ValueError):
                continue  # sparse, composite or op outputs (an init op): not callable
            calls[name] = (feeds, fetches)
        return calls

    def _freeze(self, signature_defs: Any, config: Any) -> None:
        """Replace the graph by one whose variables are constants (what every callable
        signature fetches, and what that needs); kept as loaded when a signature would
        lose a tensor it feeds (an input no output depends on is pruned)."""
        outputs = sorted(
            {
                signature_defs[name].outputs[key].name.split(":")[0]
                for name in self._calls
                for key in signature_defs[name].outputs
            }
        )
        with deprecation.silence():  # TF1 freezing, deliberately: see the loader above
            frozen_def = tf.compat.v1.graph_util.convert_variables_to_constants(
                self._session, self._graph.as_graph_def(), outputs
            )
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(frozen_def, name="")
        graph.finalize()
        loaded = self._graph, self._session, self._calls
        self._graph = graph
        self._calls = self._callables({name: signature_defs[name] for name in self._calls})
        if set(self._calls) != set(loaded[2]):
            self._graph, _, self._calls = loaded
            return
        self._session = tf.compat.v1.Session(graph=graph, config=config)
        loaded[1].close()
        self.precision = "frozen"

    def _tensor(self, info: meta_graph_pb2.TensorInfo) -> Any:
        if info.WhichOneof("encoding") != "name":
            raise ValueError("not a dense tensor")
        return self._graph.get_tensor_by_name(info.name)._as_tf_output()

    def callable(self, name: str, signature_def: meta_graph_pb2.SignatureDef) -> bool:
        return name in self._calls

    def run(self, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds, fetches = self._calls[name]
        keys = list(fetches)
        # Session.run would refuse feeds whose shape differs from the tensor's static
        # shape (a check in Python only); TF Serving's session call has no such check,
        # so this makes the call Session.run makes after it.
        values = self._session._call_tf_sessionrun(  # noqa: SLF001
            None,
            {feeds[key]: value for key, value in inputs.items()},
            [fetches[k] for k in keys],
            [],
            None,
        )
        return dict(zip(keys, values, strict=True))


def _freezable(graph: tf.Graph, meta_graph: meta_graph_pb2.MetaGraphDef) -> bool:
    """Whether the graph can run with its variables as constants: no assets (their
    paths are fed at load) and no lookup tables (filled by the init op, which freezing
    drops), in the graph or in its functions."""
    if meta_graph.asset_file_def or meta_graph.collection_def.get("asset_filepaths"):
        return False
    graph_def = graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    types.update(node.op for f in graph_def.library.function for node in f.node_def)
    return not any("Table" in op for op in types)


class ServableModel:
    """A SavedModel version, loaded into a session (TF1 or TF2) and ready to run."""

    def __init__(
        self, model_name: str, version: int, path: str, mixed_precision: str | None = None
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.path = path
        meta_graph = read_signature_defs(path)
        self.signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in meta_graph.signature_def.items():
            self.signature_def_map.signature_def[name].CopyFrom(signature_def)
        self._runner = _Session(path, meta_graph.signature_def, mixed_precision)
        self.signatures = {
            name: Signature(
                name,
                signature_def.method_name,
                {key: _tensor_info(key, info) for key, info in signature_def.inputs.items()},
                {key: _tensor_info(key, info) for key, info in signature_def.outputs.items()},
            )
            for name, signature_def in meta_graph.signature_def.items()
            if self._runner.callable(name, signature_def)
        }

    @property
    def precision(self) -> str:
        """``float32``; with ``mixed_precision="bfloat16"``, ``frozen`` (weights as
        bfloat16 constants) or ``variables`` (cast per call, as TF Serving does)."""
        return self._runner.precision

    def signature(self, name: str | None) -> Signature:
        """The named signature (``serving_default`` when empty); 400 when it does not exist
        (TF Serving's REST wording)."""
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise invalid_argument(
                f'Serving signature name: "{name}" not found in signature def '
                f"(model {self.model_name} version {self.version} has: "
                f"{', '.join(sorted(self.signatures))})"
            )
        return self.signatures[name]

    def run(self, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the signature on numpy inputs already checked against it; numpy outputs."""
        try:
            return self._runner.run(signature.name, inputs)
        except tf.errors.InvalidArgumentError as error:
            # What the request got wrong; any other op error is the server's (a 500).
            raise invalid_argument(clean_op_error(error.message)) from None


def check_inputs(signature: Signature, inputs: dict[str, np.ndarray]) -> None:
    """Input names and dtypes must be the signature's (shapes are the model's to check)."""
    if set(inputs) != set(signature.inputs):
        raise invalid_argument(
            f"input names {sorted(inputs)} do not match signature '{signature.name}', "
            f"which takes {sorted(signature.inputs)}"
        )
    for key, array in inputs.items():
        info = signature.inputs[key]
        if array.dtype == info.numpy_dtype:
            continue
        expected = info.dtype
        actual = tf.string if array.dtype == object else tf.dtypes.as_dtype(array.dtype)
        if actual != expected:
            raise invalid_argument(
                f"input '{key}' of signature '{signature.name}' expects {dtype_name(expected)}, "
                f"got {dtype_name(actual)}"
            )


# --- Predict -------------------------------------------------------------------------


def prediction_signature(servable: ServableModel, name: str) -> Signature:
    """The signature a gRPC Predict names; FAILED_PRECONDITION when there is none, as TF
    Serving's RunPredict answers."""
    name = name or DEFAULT_SIGNATURE
    if name not in servable.signatures:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f'Serving signature key "{name}" not found. (model {servable.model_name} '
            f"version {servable.version} has: {', '.join(sorted(servable.signatures))})",
        )
    return servable.signatures[name]


def output_aliases(signature: Signature, output_filter: Sequence[str]) -> list[str]:
    """The outputs a Predict returns: those in ``output_filter``, else all (TF Serving's
    PreProcessPrediction)."""
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter) or list(signature.outputs)


# --- Classify and Regress --------------------------------------------------------------


def _short(signature_def: meta_graph_pb2.SignatureDef) -> str:
    return text_format.MessageToString(signature_def, as_one_line=True)


def _classification_problem(signature_def: meta_graph_pb2.SignatureDef) -> str | None:
    """What TF Serving's PreProcessClassification refuses in a signature, or None."""
    if len(signature_def.inputs) != 1:
        return "Expected one input Tensor."
    if len(signature_def.outputs) not in (1, 2):
        return f"Expected one or two output Tensors, found {len(signature_def.outputs)}"
    if EXAMPLES_INPUT not in signature_def.inputs:
        return f"No classification inputs found in SignatureDef: {_short(signature_def)}"
    if (
        CLASSIFY_CLASSES not in signature_def.outputs
        and CLASSIFY_SCORES not in signature_def.outputs
    ):
        return (
            "Expected classification signature outputs to contain at least one of "
            f'"{CLASSIFY_CLASSES}" or "{CLASSIFY_SCORES}". Signature was: {_short(signature_def)}'
        )
    return None


def _regression_problem(signature_def: meta_graph_pb2.SignatureDef) -> str | None:
    """What TF Serving's PreProcessRegression refuses in a signature, or None."""
    if len(signature_def.inputs) != 1:
        return "Expected one input Tensor."
    if len(signature_def.outputs) != 1:
        return "Expected one output Tensor."
    if EXAMPLES_INPUT not in signature_def.inputs:
        return f"No regression inputs found in SignatureDef: {_short(signature_def)}"
    if REGRESS_OUTPUTS not in signature_def.outputs:
        return f"No regression outputs found in SignatureDef: {_short(signature_def)}"
    return None


_API = {
    CLASSIFY_METHOD: ("classification", _classification_problem),
    REGRESS_METHOD: ("regression", _regression_problem),
}


def _checked(servable: ServableModel, name: str, method: str, missing: str) -> Signature:
    """The signature ``name`` if TF Serving's rules let ``method`` run it."""
    signature_def = servable.signature_def_map.signature_def.get(name)
    if signature_def is None:
        raise invalid_argument(f"{missing}{name}")
    kind, problem_of = _API[method]
    problem = problem_of(signature_def)
    if problem is not None and signature_def.method_name != method:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {method}. "
            f"Was: {signature_def.method_name}"
        )
    if problem is not None:
        raise invalid_argument(problem)
    if name not in servable.signatures:
        raise invalid_argument(f"signature {name} cannot be called")
    return servable.signatures[name]


def classification_signature(servable: ServableModel, name: str) -> Signature:
    """The signature a Classify request names (``serving_default`` when empty)."""
    name = name or DEFAULT_SIGNATURE
    return _checked(servable, name, CLASSIFY_METHOD, "No signature was found with the name: ")


def regression_signature(servable: ServableModel, name: str) -> Signature:
    """The signature a Regress request names (``serving_default`` when empty)."""
    name = name or DEFAULT_SIGNATURE
    return _checked(servable, name, REGRESS_METHOD, "No signature was found with the name: ")


def examples_inputs(examples: Sequence[bytes]) -> dict[str, np.ndarray]:
    """The one input of a Classify or Regress signature: serialized tf.Examples [N]."""
    if not examples:
        raise invalid_argument("Input is empty.")
    return {EXAMPLES_INPUT: np.array(list(examples), dtype=object)}


def fill_classifications(
    result: Any,
    labels: np.ndarray | None,
    scores: np.ndarray,
) -> None:
    """Per example, a (label, score) Class per column, in the model's order, into a
    ClassificationResult (the gRPC reply's, or a request log's)."""
    label_rows = labels.tolist() if labels is not None else None
    for row, row_scores in enumerate(scores.tolist()):
        classification = result.classifications.add()
        for column, score in enumerate(row_scores):
            entry = classification.classes.add(score=score)
            if label_rows is not None:
                entry.label = label_rows[row][column].decode("utf-8", "replace")


def classification_result(
    outputs: dict[str, np.ndarray], num_examples: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """Class labels [N, K] (None without a ``classes`` output) and scores [N, K] (zeros
    without a ``scores`` output, as an unset score reads), checked as TF Serving's
    PostProcessClassificationResult checks them."""
    classes = outputs.get(CLASSIFY_CLASSES)
    scores = outputs.get(CLASSIFY_SCORES)
    for key, array, dtype in (
        (CLASSIFY_CLASSES, classes, "DT_STRING"),
        (CLASSIFY_SCORES, scores, "DT_FLOAT"),
    ):
        if array is None:
            continue
        if array.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {list(array.shape)}"
            )
        actual = "DT_STRING" if array.dtype == object else dtype_name(tf.as_dtype(array.dtype))
        if actual != dtype:
            raise invalid_argument(f"Expected {key} Tensor of {dtype}. Got: {actual}")
        if array.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {key} output batch size of {num_examples}. Got: {array.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    if scores is None:
        scores = np.zeros(classes.shape, np.float32)
    return classes, scores


def regression_result(outputs: dict[str, np.ndarray], num_examples: int) -> np.ndarray:
    """One float32 value per example, checked as TF Serving's PostProcessRegressionResult
    checks the ``outputs`` tensor ([N] or [N, 1], DT_FLOAT)."""
    values = outputs[REGRESS_OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {list(values.shape)}"
        )
    if values.shape[0] != num_examples:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} "
            f"vs. {values.shape[0]}"
        )
    actual = "DT_STRING" if values.dtype == object else dtype_name(tf.as_dtype(values.dtype))
    if actual != "DT_FLOAT":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {actual}")
    return values.reshape(num_examples)


def input_examples(model_input: Any) -> list[bytes]:
    """The serialized tf.Examples of a Classify, Regress or MultiInference ``Input``;
    with a context, its bytes go before each example's, so the example's features win
    (what TF Serving feeds)."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in model_input.example_list.examples]
    if kind == "example_list_with_context":
        with_context = model_input.example_list_with_context
        context = with_context.context.SerializeToString()
        return [context + e.SerializeToString() for e in with_context.examples]
    return []


# --- MultiInference -------------------------------------------------------------------


def multi_inference_model(model_names: Sequence[str]) -> str:
    """The one model every task of a MultiInference request names."""
    if any(not name for name in model_names):
        raise invalid_argument("Found ModelSpec with an empty model name.")
    if len(set(model_names)) > 1:
        raise invalid_argument(
            "All ModelSpecs in a MultiInferenceRequest must access the same model name."
        )
    return model_names[0] if model_names else ""


def multi_inference_signatures(
    servable: ServableModel, tasks: Sequence[tuple[str, str]]
) -> list[tuple[Signature, str]]:
    """For each (signature name, method name) task, the signature it runs and the method
    (classify or regress)."""
    seen: set[str] = set()
    signatures = []
    for signature_name, method in tasks:
        name = signature_name or DEFAULT_SIGNATURE
        if name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
        missing = "Requested signature not found in model graph: "
        if name not in servable.signature_def_map.signature_def:
            raise invalid_argument(f"{missing}{name}")
        if method not in _API:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {method}"
            )
        signatures.append((_checked(servable, name, method, missing), method))
    return signatures


# --- Warm-up --------------------------------------------------------------------------


def _run_warmup_log(servable: ServableModel, log: Any) -> None:
    """Run one PredictionLog's request as TF Serving's warm-up runs it."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        signature = prediction_signature(servable, request.model_spec.signature_name)
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        check_inputs(signature, inputs)
        output_aliases(signature, request.output_filter)
        servable.run(signature, inputs)
    elif kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        examples = input_examples(request.input)
        if kind == "classify_log":
            signature = classification_signature(servable, request.model_spec.signature_name)
        else:
            signature = regression_signature(servable, request.model_spec.signature_name)
        inputs = examples_inputs(examples)
        check_inputs(signature, inputs)
        outputs = servable.run(signature, inputs)
        if kind == "classify_log":
            classification_result(outputs, len(examples))
        else:
            regression_result(outputs, len(examples))
    elif kind == "multi_inference_log":
        request = log.multi_inference_log.request
        multi_inference_model([task.model_spec.name for task in request.tasks])
        tasks = [(t.model_spec.signature_name, t.method_name) for t in request.tasks]
        examples = input_examples(request.input)
        for signature, method in multi_inference_signatures(servable, tasks):
            inputs = examples_inputs(examples)
            check_inputs(signature, inputs)
            outputs = servable.run(signature, inputs)
            if method == CLASSIFY_METHOD:
                classification_result(outputs, len(examples))
            else:
                regression_result(outputs, len(examples))
    elif kind is not None:
        raise ValueError(f"Unsupported log_type for warmup: {kind}")


def replay_warmup_file(servable: ServableModel) -> int:
    """Replay the version's ``assets.extra/tf_serving_warmup_requests`` as TF Serving
    does; any failure (a record that does not parse, a request that fails, more than
    MAX_WARMUP_RECORDS records) fails the load. Returns the number replayed (0 when
    the file is absent: warm-up is optional)."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(servable.path, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
        logger.info("No warmup data file found at %s", path)
        return 0
    replayed = 0
    for index, record in enumerate(tf.data.TFRecordDataset(path)):
        if replayed == MAX_WARMUP_RECORDS:
            raise ValueError(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
        try:
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            _run_warmup_log(servable, log)
        except Exception as error:  # noqa: BLE001 - any failure fails the load, as in TF Serving
            detail = error.message if isinstance(error, ServingError) else str(error)
            raise ValueError(f"{path}: warm-up record {index} failed: {detail}") from error
        replayed += 1
    logger.info("replayed %d warm-up requests from %s", replayed, path)
    return replayed


def warm_up(servable: ServableModel) -> None:
    """TF Serving's warm-up: the version's own warm-up file, if it has one. Nothing is
    invented for a version without it (its first requests pay for tracing)."""
    replay_warmup_file(servable)
