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
from typing import Any

from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from serving.publish import (
    current_version_if_same,
    labelled_versions,
    prune_versions,
    publish_lock,
    publish_saved_model,
)
from serving.verify import verify_saved_model


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
            else:
                verify = verify_saved_model if config.get("verify", True) else None
                version, serving_path = publish_saved_model(
                    model_path, base_directory, verify=verify
                )
                keep = int(config.get("keep_versions", 0))
                if keep:
                    prune_versions(base_directory, keep, models_config=models_config)
        # Archive copy under the artifact's own URI, as the stock Pusher does.
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=str(version))

        # Lineage recorded at push time (read by pipeline/lineage.py, mnist-tfx versions):
        # the spans and source sha256 the Trainer wrote into the model (trainer/export.py).
        from tfx.dsl.io import fileio

        sources = f"{model_path}/assets.extra/lineage/sources.json"
        if fileio.exists(sources):
            model_push.set_string_custom_property(
                "training_sources", io_utils.read_string_file(sources)
            )
