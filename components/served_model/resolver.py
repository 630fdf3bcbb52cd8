"""``ServedModelStrategy``: the Model artifact of the version the serving base path
serves now, the baseline of the Evaluator and the reference of the data validator.

Why not TFX's ``LatestBlessedModelStrategy``: it returns the newest *blessed* model,
which is not always the one being served. A run killed (or failing) after the
Evaluator blessed its model and before the Pusher published it leaves a blessed,
never-served model that would become the bar every later candidate is held to; and
``mnist-tfx rollback`` republishes an old version as a new one, which the blessings
in ML Metadata know nothing about. The model that users get is the one to beat.

How the served version maps to a model:

1. TF Serving's default version policy serves the newest integer version under the
   base path (``serving.publish.list_versions``).
2. A rollback copy (``serving.publish.rollback_sources``, ``.rollbacks.jsonl``) holds
   the files of the version it restores, which may itself be a rollback copy: the
   chain is followed down to a version a Pusher published.
3. The Pusher (``components/pusher/executor.py``, through TFX's ``_MarkPushed``)
   records ``pushed_version`` and ``pushed_destination`` (``<base>/<version>``) on its
   PushedModel artifact; the Model that Pusher execution took as its ``model`` input
   is the answer. A Pusher that found the blessed model already served records the
   existing version again (``reused_version``); the first push of a version wins,
   the later ones carried byte-identical files.

No version served, or none this pipeline pushed (the resolver's channels are scoped
to the pipeline's context) -> no baseline, exactly as on a pipeline's first run.

A cache hit earned, not a re-check against itself: with ``consumer`` (the node the
baseline is for, e.g. ``Evaluator``) and a ``candidate`` channel (what that node
checks: the Trainer's model, ExampleGen's examples), when the served model came from a
run in which ``consumer`` already checked exactly this candidate, the resolver hands
back the baseline that check had. The consumer's inputs then equal that run's, so TFX's
cache returns its result (and the Pusher's and the report's after it) instead of
re-evaluating the served model against itself, which can only pass. Anything else -
a new model, new data, a rollback, a run whose check is not in ML Metadata - gets the
served model as before.

Works under the LocalDagRunner and the Airflow DAG's partial runs (both resolve the
IR input graph): they build the strategy from the Resolver's ``config`` and call
``resolve_artifacts`` with every Model and PushedModel artifact of the pipeline.
Kubeflow's V2 compiler accepts only TFX's two built-in strategies
(docs/orchestrators.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import ml_metadata as mlmd
from ml_metadata import errors as mlmd_errors
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.dsl.components.common import resolver
from tfx.types import standard_artifacts

from serving.publish import list_versions, rollback_sources

LOG = logging.getLogger(__name__)

MODEL_KEY = "model"
PUSHED_MODEL_KEY = "pushed_model"
CANDIDATE_KEY = "candidate"
# The consumer's input key of the baseline (the Evaluator's and the data validator's).
BASELINE_INPUT = "baseline_model"
# TFX's context types (tfx.orchestration.portable.mlmd.context_lib).
PIPELINE_CONTEXT = "pipeline"
PIPELINE_RUN_CONTEXT = "pipeline_run"
NODE_CONTEXT = "node"
# The Pusher's input key of the model it pushes (tfx.types.standard_component_specs.MODEL_KEY).
PUSHER_MODEL_INPUT = "model"
# Custom properties TFX's Pusher._MarkPushed sets on the PushedModel artifact it pushed.
PUSHED_VERSION = "pushed_version"
PUSHED_DESTINATION = "pushed_destination"


def served_version(serving_model_dir: str | os.PathLike) -> tuple[int, int] | None:
    """(served version, the version a Pusher published with those files), or None
    when nothing is served. The two differ when the served version is a rollback
    copy; chains of rollbacks are followed to their end."""
    versions = list_versions(serving_model_dir)
    if not versions:
        return None
    current = versions[-1]
    sources = rollback_sources(serving_model_dir)
    origin, seen = current, {current}
    while origin in sources:
        origin = sources[origin]
        if origin in seen:  # a hand-edited log; versions only grow, so never written so
            raise ValueError(
                f"{serving_model_dir}: .rollbacks.jsonl restores in a cycle through "
                f"version {origin}"
            )
        seen.add(origin)
    return current, origin


def _same_dir(a: str, b: str) -> bool:
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def _pushes_of(
    pushed_models: list[types.Artifact], serving_model_dir: str, version: int
) -> list[types.Artifact]:
    """The PushedModel artifacts that name ``serving_model_dir/<version>``, oldest first."""
    found = []
    for pushed in pushed_models:
        if not pushed.has_custom_property(PUSHED_VERSION):
            continue  # a Pusher that did not push (not blessed)
        if pushed.get_string_custom_property(PUSHED_VERSION) != str(version):
            continue
        destination = pushed.get_string_custom_property(PUSHED_DESTINATION)
        if destination and not _same_dir(os.path.dirname(destination), serving_model_dir):
            continue  # the same version number under another base path
        found.append(pushed)
    return sorted(found, key=lambda a: a.id)


def _pusher_execution(store: mlmd.MetadataStore, pushed: types.Artifact) -> int | None:
    """ID of the Pusher execution that first output ``pushed`` (a cached Pusher
    outputs the same artifact again; the first is the one that published it)."""
    events = store.get_events_by_artifact_ids([pushed.id])
    executions = [e.execution_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    return min(executions) if executions else None


def _inputs_by_key(store: mlmd.MetadataStore, execution_id: int) -> dict[str, set[int]]:
    """{input key: artifact ids} of one execution, from its INPUT events."""
    keys: dict[str, set[int]] = {}
    for event in store.get_events_by_execution_ids([execution_id]):
        if event.type != metadata_store_pb2.Event.INPUT:
            continue
        for step in event.path.steps:  # one event may carry several paths
            if step.HasField("key"):
                keys.setdefault(step.key, set()).add(event.artifact_id)
    return keys


def _pushed_model_input(store: mlmd.MetadataStore, pushed: types.Artifact) -> int | None:
    """ID of the Model the Pusher execution that output ``pushed`` took as input."""
    execution = _pusher_execution(store, pushed)
    if execution is None:
        return None
    ids = _inputs_by_key(store, execution).get(PUSHER_MODEL_INPUT, set())
    return min(ids) if ids else None


def _consumer_check_in_run_of(
    store: mlmd.MetadataStore, pushed: types.Artifact, consumer: str
) -> dict[str, set[int]] | None:
    """Inputs of ``consumer``'s last successful execution in the pipeline run whose
    Pusher output ``pushed``, or None when ML Metadata does not hold one."""
    execution = _pusher_execution(store, pushed)
    if execution is None:
        return None
    try:
        contexts = store.get_contexts_by_execution(execution)
    except mlmd_errors.NotFoundError:  # an execution in no context: nothing to compare
        return None
    types_by_id = {t.id: t.name for t in store.get_context_types()}
    by_type: dict[str, list[metadata_store_pb2.Context]] = {}
    for context in contexts:
        by_type.setdefault(types_by_id.get(context.type_id, ""), []).append(context)
    if (
        len(by_type.get(PIPELINE_CONTEXT, [])) != 1
        or len(by_type.get(PIPELINE_RUN_CONTEXT, [])) != 1
    ):
        return None
    [pipeline], [run] = by_type[PIPELINE_CONTEXT], by_type[PIPELINE_RUN_CONTEXT]
    node = store.get_context_by_type_and_name(NODE_CONTEXT, f"{pipeline.name}.{consumer}")
    if node is None:
        return None
    in_run = {e.id for e in store.get_executions_by_context(run.id)}
    done = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    checks = [
        e.id
        for e in store.get_executions_by_context(node.id)
        if e.id in in_run and e.last_known_state in done
    ]
    return _inputs_by_key(store, max(checks)) if checks else None


def _keys_by_type(input_dict: Mapping[str, list[types.Artifact]]) -> tuple[str, str]:
    """The input keys of the Model and the PushedModel channels, checked."""
    if set(input_dict) - {CANDIDATE_KEY} != {MODEL_KEY, PUSHED_MODEL_KEY}:
        raise ValueError(
            f"ServedModelStrategy: expected the channels {MODEL_KEY!r} (Model) and "
            f"{PUSHED_MODEL_KEY!r} (PushedModel), and optionally {CANDIDATE_KEY!r}, "
            f"got {sorted(input_dict)}"
        )
    for key, expected in (
        (MODEL_KEY, standard_artifacts.Model),
        (PUSHED_MODEL_KEY, standard_artifacts.PushedModel),
    ):
        for artifact in input_dict[key]:
            if not isinstance(artifact, expected):
                raise ValueError(
                    f"ServedModelStrategy: channel {key!r} holds a {artifact.type_name}, "
                    f"expected {expected.TYPE_NAME}"
                )
    return MODEL_KEY, PUSHED_MODEL_KEY


class ServedModelStrategy(resolver.ResolverStrategy):
    """Resolves ``model`` to the Model artifact the serving base path serves now
    (with ``pushed_model``, the PushedModel artifact that published it); both empty
    when there is none. ``serving_model_dir`` comes from the Resolver's ``config``:
    the Pusher's base directory, ``<serving root>/<model>``; ``consumer``, with a
    ``candidate`` channel, the node whose earlier check of the same candidate is
    reused and ``candidate_input`` that node's input key of it (module docstring).
    The ``candidate`` channel is passed through unchanged."""

    def __init__(self, serving_model_dir: str, consumer: str = "", candidate_input: str = ""):
        if not serving_model_dir:
            raise ValueError("ServedModelStrategy: serving_model_dir is empty")
        if bool(consumer) != bool(candidate_input):
            raise ValueError(
                "ServedModelStrategy: 'consumer' and 'candidate_input' go together, got "
                f"consumer={consumer!r}, candidate_input={candidate_input!r}"
            )
        self._consumer = consumer
        self._candidate_input = candidate_input
        if "://" in serving_model_dir:
            # list_versions reads a local or mounted filesystem, as the Pusher writes one.
            raise ValueError(
                f"ServedModelStrategy: serving_model_dir {serving_model_dir!r}: expected a "
                "local or mounted path, not a URI"
            )
        self._serving_model_dir = serving_model_dir

    def resolve_artifacts(
        self,
        store: mlmd.MetadataStore,
        input_dict: dict[str, list[types.Artifact]],
    ) -> dict[str, list[types.Artifact]]:
        model_key, pushed_key = _keys_by_type(input_dict)
        passed = {k: v for k, v in input_dict.items() if k == CANDIDATE_KEY}
        if passed and not self._consumer:
            raise ValueError(
                f"ServedModelStrategy: a {CANDIDATE_KEY!r} channel needs the consumer node "
                "id and its input key in the Resolver's config ('consumer', 'candidate_input')"
            )
        none: dict[str, list[types.Artifact]] = {model_key: [], pushed_key: [], **passed}
        served = served_version(self._serving_model_dir)
        if served is None:
            LOG.info("no version served under %s: no baseline", self._serving_model_dir)
            return none
        current, origin = served
        models = {m.id: m for m in input_dict[model_key]}
        for pushed in _pushes_of(input_dict[pushed_key], self._serving_model_dir, origin):
            model = models.get(_pushed_model_input(store, pushed))
            if model is not None:
                reused = self._reused_baseline(store, pushed, input_dict, models)
                if reused is not None:
                    LOG.info(
                        "%s already checked this %s in the run that made the served version "
                        "%d: its baseline then (%s) again, so TFX's cache can answer",
                        self._consumer,
                        CANDIDATE_KEY,
                        current,
                        [m.id for m in reused] or "none",
                    )
                    return {model_key: reused, pushed_key: [], **passed}
                LOG.info(
                    "baseline: version %d%s, model artifact %d (%s)",
                    current,
                    f" (restores version {origin})" if origin != current else "",
                    model.id,
                    model.uri,
                )
                return {model_key: [model], pushed_key: [pushed], **passed}
        LOG.warning(
            "version %d under %s was not pushed by this pipeline (no PushedModel in its "
            "ML Metadata names it): no baseline",
            origin,
            self._serving_model_dir,
        )
        return none

    def _reused_baseline(
        self,
        store: mlmd.MetadataStore,
        pushed: types.Artifact,
        input_dict: Mapping[str, list[types.Artifact]],
        models: Mapping[int, types.Artifact],
    ) -> list[types.Artifact] | None:
        """The baseline ``consumer`` had when it checked this very candidate in the
        run that pushed ``pushed``; None when there is no such check."""
        candidate = {a.id for a in input_dict.get(CANDIDATE_KEY, [])}
        if not self._consumer or not candidate:
            return None
        check = _consumer_check_in_run_of(store, pushed, self._consumer)
        if check is None:
            return None
        if check.get(self._candidate_input) != candidate:
            return None  # that run checked something else: a new model or new data
        baseline = sorted(check.get(BASELINE_INPUT, set()))
        if any(i not in models for i in baseline):
            return None
        return [models[i] for i in baseline]
