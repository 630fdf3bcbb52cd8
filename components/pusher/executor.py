"""A Pusher executor that publishes atomically (see ``serving/publish.py``).

TFX's stock Pusher copies the model file by file into its final integer-named
directory (saved_model.pb last); TF Serving can see that directory before it is
complete. This executor keeps the stock Pusher's blessing check and MLMD
properties and changes only how the files reach the serving base path.

The base path (the filesystem destination's ``base_directory``) may be local or an
``s3://`` / ``gs://`` URL, and the trained model may come from a URL too (a pipeline
root on an object store): ``serving/publish.py`` then stages, verifies and copies with
``saved_model.pb`` last under a lease instead of renaming under an flock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from components.pusher import model_card
from serving import object_store
from serving.publish import (
    labelled_versions,
    list_versions,
    next_version,
    prune_versions,
    publish_lock,
    publish_saved_model,
)
from serving.verify import verify_saved_model


def current_version_if_same(model_dir: str, base_directory: str) -> tuple[int, str] | None:
    """(version, path) of the newest version when it holds exactly ``model_dir``'s files,
    its model card aside (``serving.publish.current_version_if_same`` compares every
    file, and a version carries a card the Trainer's export has not)."""
    versions = list_versions(base_directory)
    if not versions:
        return None
    newest = (
        object_store.join(base_directory, str(versions[-1]))
        if object_store.is_url(base_directory)
        else str(Path(base_directory) / str(versions[-1]))
    )
    if model_card.model_digest(newest) == model_card.model_digest(model_dir):
        return versions[-1], newest
    return None


def _local_copy(model_dir: str, destination: Path) -> Path:
    """A writable local copy of the Trainer's export, for the card to be written into:
    the Trainer's output artifact itself is never changed."""
    if object_store.is_url(model_dir):
        for rel in object_store.files_under(model_dir):
            (destination / rel).parent.mkdir(parents=True, exist_ok=True)
            object_store.copy(object_store.join(model_dir, rel), str(destination / rel))
    else:
        shutil.copytree(model_dir, destination)
    for directory in (destination, destination / model_card.ASSETS_EXTRA):
        if directory.is_dir():
            os.chmod(directory, os.stat(directory).st_mode | stat.S_IWUSR)
    return destination


class AtomicPushExecutor(tfx_pusher_executor.Executor):
    """Stock Pusher semantics; the version directory appears whole or not at all.

    The staged copy is verified before it is renamed into place
    (``serving/verify.py``: it loads, and its signatures answer as the Trainer
    did); ``custom_config["verify"] = False`` turns that off. ``custom_config["keep_versions"]``
    (when > 0) keeps only that many newest versions, deleting older ones after
    the new one is in place, except versions that a label names in the TF Serving
    ``models.config`` at ``custom_config["models_config"]`` (when given). The whole
    push holds the base path's publish lock (``serving/publish.py``).
    """

    @staticmethod
    def _custom_config(exec_properties: dict[str, Any]) -> dict[str, Any] | None:
        raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
        return json.loads(raw) if isinstance(raw, str) and raw else raw

    def _baseline_version(self, blessing: types.Artifact | None, base_directory: str) -> int | None:
        """The served version the Evaluator compared against: the newest version, when
        it holds the blessing's baseline model (the served-model resolver's choice)."""
        if blessing is None or not blessing.has_custom_property("baseline_model"):
            return None
        versions = list_versions(base_directory)
        if not versions:
            return None
        from tfx.utils import path_utils

        baseline = path_utils.serving_model_path(
            blessing.get_string_custom_property("baseline_model")
        )
        newest = (
            object_store.join(base_directory, str(versions[-1]))
            if object_store.is_url(base_directory)
            else str(Path(base_directory) / str(versions[-1]))
        )
        try:
            same = model_card.model_digest(newest) == model_card.model_digest(baseline)
        except OSError:
            return None
        return versions[-1] if same else None

    def _publish_with_card(
        self,
        input_dict: dict[str, list[types.Artifact]],
        model_path: str,
        model_push: types.Artifact,
        base_directory: str,
        config: dict[str, Any],
        verify: Any,
    ) -> tuple[int, str]:
        """Publish a copy of the model with its card in ``assets.extra`` (see
        ``model_card.py``): the card is in the copy before ``publish_saved_model``
        stages it, so the version appears with its card or not at all.

        The card names the version, chosen by ``next_version`` for a fixed ``now``
        that ``publish_saved_model`` is given too; both run under the publish lock
        held by ``Do``, so they agree. Should they not (an object store's leftover
        prefix removed in between), the card is rewritten in place with the version
        actually published.
        """
        blessing = (input_dict.get(standard_component_specs.MODEL_BLESSING_KEY) or [None])[0]
        model = (input_dict.get(standard_component_specs.MODEL_KEY) or [None])[0]
        now = time.time()
        expected = next_version(base_directory, now)
        model_name = (
            object_store.basename(base_directory.rstrip("/"))
            if object_store.is_url(base_directory)
            else Path(base_directory).name
        )
        context = self._context
        pipeline = run_id = None
        if context is not None:
            pipeline = context.pipeline_info.id if context.pipeline_info is not None else None
            run_id = context.pipeline_run_id
        facts = model_card.gather_facts(
            model_dir=model_path,
            model_name=model_name,
            version=expected,
            blessing=blessing,
            model_artifact=model,
            card_config=config.get("model_card"),
            baseline_version=self._baseline_version(blessing, base_directory),
            pipeline=pipeline,
            run_id=run_id,
        )
        with tempfile.TemporaryDirectory(prefix="mnist-tfx-card-") as tmp:
            carded = _local_copy(model_path, Path(tmp) / "model")
            model_card.write_card(carded, facts)
            version, serving_path = publish_saved_model(
                carded, base_directory, now=now, verify=verify
            )
            if version != expected:
                logging.warning(
                    "model card: version %d expected, %d published; card rewritten",
                    expected,
                    version,
                )
                facts.version = version
                model_card.write_card(serving_path, facts)
            # Archive copy under the artifact's own URI, as the stock Pusher does (with the card).
            io_utils.copy_dir(str(carded), model_push.uri)
        logging.info("model card: %s/%s", serving_path, model_card.CARD_FILES[0])
        return version, serving_path

    def Do(  # noqa: N802 - TFX's executor interface
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            logging.info("model not blessed: nothing pushed")
            return
        model_path = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("AtomicPushExecutor pushes to a filesystem destination only")
        base_directory = destination.filesystem.base_directory
        config = self._custom_config(exec_properties) or {}
        models_config = config.get("models_config") or None
        if models_config is not None:
            # A models.config that does not parse fails the push before anything is written.
            labelled_versions(models_config, base_directory)
        # One lock over the whole push: no other push, prune or rollback can slip in
        # between "is this model already served?" and publishing or pruning.
        with publish_lock(base_directory):
            current = current_version_if_same(model_path, base_directory)
            if current is not None:
                version, serving_path = current
                logging.info("version %d already serves this model; nothing new published", version)
                model_push.set_int_custom_property("reused_version", 1)
                # Archive copy under the artifact's own URI, as the stock Pusher does.
                io_utils.copy_dir(model_path, model_push.uri)
            else:
                verify = verify_saved_model if config.get("verify", True) else None
                version, serving_path = self._publish_with_card(
                    input_dict, model_path, model_push, base_directory, config, verify
                )
                keep = int(config.get("keep_versions", 0))
                if keep:
                    prune_versions(base_directory, keep, models_config=models_config)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=str(version))

        # Lineage recorded at push time (read by pipeline/lineage.py, mnist-tfx versions):
        # the spans and source sha256 the Trainer wrote into the model (trainer/export.py).
        from tfx.dsl.io import fileio

        sources = f"{model_path}/assets.extra/lineage/sources.json"
        if fileio.exists(sources):
            model_push.set_string_custom_property(
                "training_sources", io_utils.read_string_file(sources)
            )
