"""Run settings for the local runner and the CLI: where everything goes, per
dataset defaults, and the fingerprint of the user code. Paths only; the
pipeline's shape is ``pipeline/pipeline.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.data_validator.profile import DEFAULT_MAX_DRIFT, DEFAULT_MAX_LABEL_DRIFT
from pipeline.fingerprints import COMPONENT_CODE, fingerprint

# Blessing floor on overall test accuracy, per dataset (the Evaluator's threshold on
# the test split, the official test set).
DEFAULT_MIN_ACCURACY = {"mnist": 0.98, "fashion_mnist": 0.88}
# Floor on every class's test accuracy. Fashion-MNIST's Shirt class is the hard one
# (about 0.7 for this CNN), hence its lower floor.
DEFAULT_MIN_CLASS_ACCURACY = {"mnist": 0.95, "fashion_mnist": 0.60}
# `--beam direct` (pipeline/beam_runners.py): Beam's DirectRunner in this process.
DEFAULT_BEAM_ARGS = (
    "--runner=DirectRunner",
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
)


@dataclass(frozen=True)
class RunConfig:
    """Everything one local run needs; defaults put it all under ``output_root``."""

    dataset: str
    output_root: Path = Path("tfx_output")
    data_dir: Path = Path("data")
    source: str = "auto"
    pipeline_name: str | None = None
    # A local directory, or an s3:// / gs:// URL (a str: pathlib would turn s3://b into s3:/b).
    serving_root: Path | str | None = None
    model_name: str | None = None
    # --metadata: a SQLite file, sqlite:///path or mysql://user@host[:port]/database.
    metadata_path: Path | str | None = None
    min_accuracy: float | None = None
    min_class_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    keep_versions: int = 5
    # TF Serving models.config whose version labels protect versions from pruning.
    models_config: Path | None = None
    # ExampleValidator's drift bounds against the served model's training data.
    max_drift: float = DEFAULT_MAX_DRIFT
    max_label_drift: float = DEFAULT_MAX_LABEL_DRIFT
    # Transform and the Trainer learn from the latest `num_spans` spans.
    num_spans: int = 1
    hparams: dict[str, Any] = field(default_factory=dict)
    beam_args: tuple[str, ...] = DEFAULT_BEAM_ARGS
    enable_cache: bool = True

    @property
    def name(self) -> str:
        if self.pipeline_name:
            return self.pipeline_name
        model = self.hparams.get("model", "cnn_model_fn")
        # Each model has its own pipeline (own metadata, own baseline); the default
        # model keeps the original name.
        return f"{self.dataset}_{'cnn' if model == 'cnn_model_fn' else model}"

    @property
    def pipeline_dir(self) -> Path:
        return self.output_root / self.name

    @property
    def pipeline_root(self) -> Path:
        return self.pipeline_dir / "artifacts"

    @property
    def metadata(self) -> Path | str:
        return self.metadata_path or self.pipeline_dir / "metadata.sqlite"

    @property
    def metadata_connection(self):
        """The ML Metadata ConnectionConfig for ``metadata`` (SQLite or MySQL)."""
        from pipeline.metadata_config import metadata_connection_config

        return metadata_connection_config(self.metadata)

    @property
    def serving_model_dir(self) -> Path | str:
        """SERVING_ROOT/<model name>: a Path, or a URL str when the root is an object store."""
        from serving import object_store

        root = self.serving_root or self.output_root / "serving"
        name = self.model_name or self.default_model_name
        if object_store.is_url(root):
            return object_store.join(str(root), name)
        return Path(root) / name

    @property
    def default_model_name(self) -> str:
        """The TF Serving model name: the dataset's for the default model; each other
        model gets its own base path, since its gate compares it only with its own
        pipeline's blessed models."""
        model = self.hparams.get("model", "cnn_model_fn")
        return self.dataset if model == "cnn_model_fn" else f"{self.dataset}_{model}"

    @property
    def tfrecord_dir(self) -> Path:
        return self.data_dir / "tfrecords" / self.dataset

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw" / self.dataset

    @property
    def class_accuracy_floors(self) -> dict[int, float]:
        floor = self.min_class_accuracy
        if floor is None:
            floor = DEFAULT_MIN_CLASS_ACCURACY.get(self.dataset, 0.0)
        return {label: floor for label in range(10)} if floor > 0 else {}

    @property
    def accuracy_drop_allowed(self) -> float:
        return self.max_accuracy_drop if self.max_accuracy_drop is not None else 0.0

    @property
    def accuracy_floor(self) -> float:
        if self.min_accuracy is not None:
            return self.min_accuracy
        return DEFAULT_MIN_ACCURACY.get(self.dataset, 0.9)


def code_fingerprint() -> str:
    """The fingerprint of the code the Trainer runs (``trainer.task`` and everything of
    ours it imports); every component's is in ``pipeline/fingerprints.py``."""
    return fingerprint(COMPONENT_CODE["Trainer"])
