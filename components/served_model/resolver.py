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

Works under the LocalDagRunner (IR input graph) and the AirflowDagRunner (the legacy
resolver driver): both build the strategy from the Resolver's ``config`` and call
``resolve_artifacts`` with every Model and PushedModel artifact of the pipeline.
Kubeflow's V2 compiler accepts only TFX's two built-in strategies
(docs/orchestrators.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.dsl.components.common import resolver
from tfx.types import standard_artifacts

from serving.publish import list_versions, rollback_sources

LOG = logging.getLogger(__name__)

MODEL_KEY = "model"
PUSHED_MODEL_KEY = "pushed_model"
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


def _pushed_model_input(store: mlmd.MetadataStore, pushed: types.Artifact) -> int | None:
    """ID of the Model the Pusher execution that output ``pushed`` took as input."""
    events = store.get_events_by_artifact_ids([pushed.id])
    executions = [e.execution_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    if not executions:
        return None
    for event in store.get_events_by_execution_ids(executions[:1]):
        if event.type != metadata_store_pb2.Event.INPUT:
            continue
        if any(step.key == PUSHER_MODEL_INPUT for step in event.path.steps):
            return event.artifact_id
    return None


def _keys_by_type(input_dict: Mapping[str, list[types.Artifact]]) -> tuple[str, str]:
    """The input keys of the Model and the PushedModel channels, checked."""
    if set(input_dict) != {MODEL_KEY, PUSHED_MODEL_KEY}:
        raise ValueError(
            f"ServedModelStrategy: expected the channels {MODEL_KEY!r} (Model) and "
            f"{PUSHED_MODEL_KEY!r} (PushedModel), got {sorted(input_dict)}"
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
    the Pusher's base directory, ``<serving root>/<model>``."""

    def __init__(self, serving_model_dir: str):
        if not serving_model_dir:
            raise ValueError("ServedModelStrategy: serving_model_dir is empty")
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
        none: dict[str, list[types.Artifact]] = {model_key: [], pushed_key: []}
        served = served_version(self._serving_model_dir)
        if served is None:
            LOG.info("no version served under %s: no baseline", self._serving_model_dir)
            return none
        current, origin = served
        models = {m.id: m for m in input_dict[model_key]}
        for pushed in _pushes_of(input_dict[pushed_key], self._serving_model_dir, origin):
            model = models.get(_pushed_model_input(store, pushed))
            if model is not None:
                LOG.info(
                    "baseline: version %d%s, model artifact %d (%s)",
                    current,
                    f" (restores version {origin})" if origin != current else "",
                    model.id,
                    model.uri,
                )
                return {model_key: [model], pushed_key: [pushed]}
        LOG.warning(
            "version %d under %s was not pushed by this pipeline (no PushedModel in its "
            "ML Metadata names it): no baseline",
            origin,
            self._serving_model_dir,
        )
        return none
