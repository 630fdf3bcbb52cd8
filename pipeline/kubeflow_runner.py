"""Kubeflow Pipelines v2 / Vertex runner: compiles the pipeline ``create_pipeline``
builds into a pipeline file with TFX's ``KubeflowV2DagRunner``.

It chooses the paths (all of them in the cluster's storage, none of this
machine's), the container image every step runs in and the Beam runner, then makes
the same ``create_pipeline`` call as ``pipeline.local_runner``, with the gates,
names and hyperparameters derived by ``RunConfig`` and ``trainer.hparams``. It
neither builds the image (``Dockerfile``) nor submits the run (docs/orchestrators.md,
"Kubeflow Pipelines v2 and Vertex").

Two output formats, chosen by ``--output``'s suffix:

* ``.yaml``: the PipelineSpec alone, what the ``kfp`` 2.x client uploads
  (``create_run_from_pipeline_package`` parses a ``.yaml`` as a PipelineSpec and
  refuses ``.json``); Vertex takes it too.
* ``.json``: TFX's PipelineJob (``displayName``, ``pipelineSpec``, ``runtimeConfig``),
  which Vertex's ``PipelineJob(template_path=...)`` takes.

Both carry the pipeline root as ``defaultPipelineRoot``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingest.errors import UsageError
from pipeline.config import RunConfig

LOG = logging.getLogger(__name__)

# KFP's pipeline name pattern (tfx/orchestration/kubeflow/v2/pipeline_builder.py,
# _LEGAL_NAME_PATTERN): no underscores, so the local name mnist_cnn becomes mnist-cnn.
KFP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
# The schema title KubeflowV2DagRunner gives a custom artifact type is its TYPE_NAME,
# which must match this (compiler_utils._SCHEMA_TITLE_RE) ...
KFP_CUSTOM_TYPE_NAME = re.compile(r"^[a-z][a-z0-9-_]{2,20}[.][A-Z][a-zA-Z0-9-_]{2,49}$")
# ... and which the container entrypoint imports as a class path to rebuild the
# artifact before it imports the executor (kubeflow_v2_entrypoint_utils.py,
# _retrieve_class_path / _parse_raw_artifact).
FORMATS = {".json": "PipelineJob JSON", ".yaml": "PipelineSpec YAML", ".yml": "PipelineSpec YAML"}


def kubeflow_pipeline_name(name: str) -> str:
    """``name`` as KFP accepts it: lower case, underscores as hyphens."""
    kfp_name = name.lower().replace("_", "-")
    if not KFP_NAME.fullmatch(kfp_name):
        raise UsageError(
            f"pipeline name {name!r}: Kubeflow needs [a-z0-9][a-z0-9-]{{0,127}} "
            "(underscores become hyphens)"
        )
    return kfp_name


def check_location(flag: str, value: str, *, remote_only: bool = False) -> str:
    """``value`` unchanged if the steps' containers can reach it: a URI
    (``gs://...``), or, unless ``remote_only``, an absolute path (a volume mounted
    into every step). A relative path would be resolved inside the container."""
    if "://" in value:
        return value.rstrip("/")
    if remote_only:
        raise UsageError(f"{flag} {value!r}: expected a URI such as gs://BUCKET/PATH")
    if not value.startswith("/"):
        raise UsageError(
            f"{flag} {value!r}: expected a URI (gs://BUCKET/PATH) or an absolute path "
            "mounted in every step's container"
        )
    return value.rstrip("/") or "/"


def check_custom_artifact_types(tfx_pipeline: Any) -> None:
    """ValueError naming the component and type if an artifact type that is not one of
    TFX's own would fail on Kubeflow: at compile time for a TYPE_NAME that is not a
    KFP schema title, or in the container when that title is not the import path of
    the class itself."""
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.utils import import_utils

    for node in tfx_pipeline.components:
        for key, channel in node.outputs.items():
            artifact_type = channel.type
            if compiler_utils.get_artifact_title(artifact_type) != "tfx.Artifact":
                continue
            type_name = artifact_type.TYPE_NAME
            where = f"{node.id}.outputs[{key!r}] ({artifact_type.__qualname__})"
            if not KFP_CUSTOM_TYPE_NAME.fullmatch(type_name):
                raise ValueError(
                    f"{where}: TYPE_NAME {type_name!r} is not a Kubeflow schema title "
                    "<module>.<Class> (one dot, module 3-21 characters in lower case)"
                )
            try:
                imported = import_utils.import_class_by_path(type_name)
            except ImportError:
                imported = None
            if imported is not artifact_type:
                raise ValueError(
                    f"{where}: the Kubeflow container imports TYPE_NAME {type_name!r} to "
                    f"rebuild the artifact, which gives {imported!r}, not this class"
                )


def build_kubeflow_pipeline(
    config: RunConfig,
    *,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
) -> Any:
    """``create_pipeline`` with the same settings as ``local_runner.build_pipeline``
    (``settings_from_config``), the cluster's paths and no metadata connection: KFP
    and Vertex give every step their own ML Metadata."""
    from pipeline.pipeline import create_pipeline
    from pipeline.settings import PipelinePaths, settings_from_config

    if config.num_spans > 1:
        raise UsageError(
            f"--spans {config.num_spans}: Kubeflow's compiler supports only the latest-artifact "
            "and latest-blessed-model resolvers, not the span resolver --spans needs"
        )
    paths = PipelinePaths(
        pipeline_name=kubeflow_pipeline_name(config.name),
        pipeline_root=check_location("--pipeline-root", pipeline_root, remote_only=True),
        data_root=check_location("--data-root", data_root),
        serving_model_dir=check_location("--serving-model-dir", serving_model_dir),
    )
    # The image must hold the same trainer/ as this checkout (build both from one commit):
    # the settings' code fingerprint is this checkout's.
    # served_baseline=False: the V2 compiler builds resolver steps only for TFX's
    # LatestArtifactStrategy and LatestBlessedModelStrategy (step_builder.py,
    # _build_resolver_spec) and raises TypeError on any other, so on Kubeflow the
    # baseline is the latest blessed model, not the served one (docs/orchestrators.md).
    return create_pipeline(
        paths,
        settings_from_config(config, metadata_connection_config=None),
        served_baseline=False,
    )


def compile_pipeline(tfx_pipeline: Any, image: str, output: Path) -> dict[str, Any]:
    """Compile for the image ``image`` and write ``output`` (``.json`` or ``.yaml``,
    see the module docstring); returns the PipelineJob as a dict."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    if output.suffix not in FORMATS:
        raise UsageError(f"--output {output}: expected a .json or .yaml file name")
    if not image or any(c.isspace() for c in image):
        raise UsageError(
            f"--image {image!r}: expected an image name such as REGISTRY/mnist-tfx:TAG"
        )
    check_custom_artifact_types(tfx_pipeline)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image)
    )
    job = runner.run(tfx_pipeline, write_out=False)
    # TFX puts the root only in the PipelineJob's runtimeConfig, which a PipelineSpec
    # YAML does not carry; KFP and Vertex both read defaultPipelineRoot.
    job["pipelineSpec"]["defaultPipelineRoot"] = tfx_pipeline.pipeline_info.pipeline_root
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".json":
        text = json.dumps(job, indent=2, sort_keys=True) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(job["pipelineSpec"], sort_keys=True)
    output.write_text(text, encoding="utf-8")
    LOG.info("wrote %s (%s, image %s)", output, FORMATS[output.suffix], image)
    return job


def build_parser() -> argparse.ArgumentParser:
    from pipeline.run_flags import add_beam, add_dataset
    from trainer.hparams import MODEL_DEFAULTS

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.kubeflow_runner",
        description="Compile the pipeline for Kubeflow Pipelines v2 or Vertex Pipelines. "
        "Every path is where the steps' containers see it: gs://... or a mounted volume.",
    )
    parser.add_argument(
        "--image", required=True, help="the image built from the Dockerfile, REGISTRY/mnist-tfx:TAG"
    )
    parser.add_argument(
        "--pipeline-root", required=True, help="artifacts go here: gs://BUCKET/PATH"
    )
    parser.add_argument(
        "--data-root",
        required=True,
        help="TFRecords written by `mnist-tfx convert`: DATA_ROOT/span-N/{train,validation,test}/*",
    )
    parser.add_argument(
        "--serving-model-dir",
        required=True,
        help="TF Serving base path: blessed models are pushed to SERVING_MODEL_DIR/<version>",
    )
    add_dataset(parser)
    parser.add_argument(
        "--pipeline-name", help="default: <dataset>-cnn (<dataset>-<model> for other models)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=".yaml (PipelineSpec: kfp client and Vertex) or .json (PipelineJob: Vertex); "
        "default: tfx_output/kubeflow/<pipeline>.yaml",
    )
    parser.add_argument(
        "--model",
        choices=sorted(MODEL_DEFAULTS),
        help="the model_fn to train (default: cnn_model_fn)",
    )
    parser.add_argument(
        "--tutorial-settings",
        action="store_true",
        help="start from the model's tutorial's own training settings instead of its defaults",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a hyperparameter, e.g. --param epochs=5 (repeatable)",
    )
    add_beam(parser)
    parser.add_argument("--no-cache", action="store_true", help="turn off KFP's step cache")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pipeline.run_flags import hparams_from_args, partial_run_config
    from pipeline.settings import SettingsError

    try:
        config = partial_run_config(
            args, hparams=hparams_from_args(args), enable_cache=not args.no_cache
        )
        tfx_pipeline = build_kubeflow_pipeline(
            config,
            pipeline_root=args.pipeline_root,
            data_root=args.data_root,
            serving_model_dir=args.serving_model_dir,
        )
        name = tfx_pipeline.pipeline_info.pipeline_name
        output = args.output or Path("tfx_output") / "kubeflow" / f"{name}.yaml"
        compile_pipeline(tfx_pipeline, args.image, output)
    except (UsageError, SettingsError) as error:
        # The user's mistakes only; any other error is ours and keeps its traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{name}: {output} (image {args.image}, root {tfx_pipeline.pipeline_info.pipeline_root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
