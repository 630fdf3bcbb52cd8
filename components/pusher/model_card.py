"""The model card a pushed version carries: ``assets.extra/model_card.md`` and ``.html``.

Written by the Pusher (``components/pusher/executor.py``) into its copy of the model
before that copy is published, so a version is never visible without its card and the
card travels wherever the version is copied (a rollback, an object store). The card is
built from the facts as the run recorded them, never recomputed: the Evaluator's TFMA
metrics and validation result (read as ``report/reading.py`` reads them for the
evaluation report; the comment above ``read_accuracy`` says why not through it), the Trainer's
``training_stats.json``, the training data's lineage carried inside the model
(``assets.extra/lineage/sources.json``), the hyperparameters the pipeline gave the
Trainer, and the blessing's baseline. A fact that cannot be reached is written as
"not recorded" rather than guessed.

Why not Google's ``model-card-toolkit``: its last release (2.0.0) requires
``tensorflow-model-analysis<0.42``, ``absl-py<1.1`` and ``jsonschema<4``, and our lock
has TFMA 0.47.1, absl-py 1.4.0 and jsonschema 4.26.0 (docs/pipeline.md, "Model cards").
The card here holds the same sections (model details, intended use and limits, data,
training, quantitative analysis, the release gate) rendered with Jinja2, which the
evaluation report already uses.

The card lives under ``assets.extra``, which TF Serving and ``tf.saved_model.load``
ignore, and outside what ``serving/verify.py`` reads, so it changes neither how the
version loads nor its verification; ``model_digest`` leaves the card out, so a version
still counts as "the same model" as the Trainer's export it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from ingest.datasets import get_dataset
from serving import object_store
from serving.object_store import is_url

ASSETS_EXTRA = "assets.extra"
CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"
# Relative paths of the card's files inside a version directory.
CARD_FILES = (f"{ASSETS_EXTRA}/{CARD_MD}", f"{ASSETS_EXTRA}/{CARD_HTML}")
# The evaluation report's copy beside the card (written by the EvaluationReport component
# after the push, see ``link_report``), and the link to it relative to the card.
REPORT_DIR = f"{ASSETS_EXTRA}/evaluation_report"
REPORT_LINK = "evaluation_report/index.html"
# The card's line (Markdown) and paragraph (HTML) that ``link_report`` replaces.
REPORT_PENDING_MD = "Not linked yet: the EvaluationReport component of run "
REPORT_LINKED_MD = "[The evaluation report of run "
REPORT_PARAGRAPH = re.compile(r'<p id="evaluation-report">.*?</p>', re.DOTALL)
SOURCES_FILE = f"{ASSETS_EXTRA}/lineage/sources.json"
HARDEST_CLASSES = 3
NOT_RECORDED = "not recorded"

# What each dataset's model is for, and where it stops being trustworthy. The images
# it was trained on decide this, so it is stated per dataset, not per model_fn.
INTENDED_USE = {
    "mnist": (
        "Classifying a single handwritten digit (0-9) in a 28x28 greyscale image, light "
        "strokes on a dark background, size-normalised and centred by centre of mass as in "
        "MNIST (NIST forms scanned in the 1990s). A teaching and pipeline reference model."
    ),
    "fashion_mnist": (
        "Classifying a single Zalando article image into one of 10 clothing classes, as a "
        "28x28 greyscale image of the product alone, centred on a dark background as in "
        "Fashion-MNIST. A teaching and pipeline reference model."
    ),
}
LIMITS = (
    "Not for other images: photographs, colour, other sizes, dark-on-light (inverted) "
    "images, several objects in one image, or objects not centred as in the dataset. "
    "Such inputs still get one of the 10 classes, often with high confidence.",
    "There is no 'none of these' answer, and the probabilities are not calibrated.",
    "Accuracy was measured only on the dataset's own test split (below); it says nothing "
    "about images from another source.",
)


@dataclass
class CardFacts:
    """Everything a card states; each field is a fact recorded by the run."""

    model_name: str
    version: int
    pushed_at: str
    dataset: str
    class_names: list[str]
    hparams: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    tfma: Accuracy | None = None
    gate: Gate | None = None
    blessed: bool | None = None
    baseline: str = "no baseline: first model"
    evaluation_dir: str | None = None
    model_run_dir: str | None = None
    pipeline: str | None = None
    run_id: str | None = None
    model_artifact_id: int | None = None
    model_uri: str | None = None
    saved_model_checksum: str | None = None
    files_sha256: str | None = None
    trainer_code_fingerprint: str | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def model_fn(self) -> str:
        return str(self.hparams.get("model", NOT_RECORDED))

    @property
    def intended_use(self) -> str:
        default = f"Classifying 28x28 greyscale images of {self.dataset}."
        return INTENDED_USE.get(self.dataset, default)

    def class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def describe(self, label: int) -> str:
        """``6 (Shirt)``, or just ``9`` where the class name is the label itself (MNIST)."""
        name = self.class_name(label)
        return str(label) if name == str(label) else f"{label} ({name})"

    def hardest(self) -> list[tuple[int, float]]:
        """The ``HARDEST_CLASSES`` classes with the lowest TFMA accuracy, worst first."""
        if self.tfma is None:
            return []
        ranked = sorted(self.tfma.per_class.items(), key=lambda item: (item[1], item[0]))
        return ranked[:HARDEST_CLASSES]

    def example_counts(self) -> dict[str, int]:
        """Examples per split: the newest training span's manifest counts, with the
        Trainer's own counts (what it actually read) where it recorded them."""
        counts: dict[str, int] = {}
        if self.sources:
            counts.update({k: int(v) for k, v in (self.sources[-1].get("counts") or {}).items()})
        if self.training:
            for split, key in (("train", "train_examples"), ("validation", "validation_examples")):
                if self.training.get(key):
                    counts[split] = int(self.training[key])
        if self.tfma is not None and self.tfma.example_count is not None:
            counts["test"] = int(self.tfma.example_count)
        order = {split: index for index, split in enumerate(("train", "validation", "test"))}
        return dict(sorted(counts.items(), key=lambda item: (order.get(item[0], 3), item[0])))

    def training_rows(self) -> list[tuple[str, str]]:
        rows = [(name, _plain(value)) for name, value in sorted(self.hparams.items())]
        if self.training:
            for key in ("epochs", "steps", "batch_size", "precision"):
                if key in self.training:
                    rows.append((f"{key} (as trained)", _plain(self.training[key])))
            if "fit_seconds" in self.training:
                rows.append(("fit time", f"{float(self.training['fit_seconds']):.1f} s"))
        return rows

    def threshold_rows(self) -> list[dict[str, str]]:
        """One row per configured threshold: where, what bound, the value, the verdict."""
        rows = []
        for t in self.gate.thresholds if self.gate is not None else ():
            where = "overall" if t.label is None and t.slice == "overall" else t.slice
            if t.label is not None:
                where = f"class {self.describe(t.label)}"
            bounds = []
            if t.lower_bound is not None:
                bounds.append(f">= {t.lower_bound:.4f}")
            if t.upper_bound is not None:
                bounds.append(f"<= {t.upper_bound:.4f}")
            if t.change_absolute is not None:
                bounds.append(f"change vs baseline >= {t.change_absolute:+.4f}")
            if t.change_relative is not None:
                bounds.append(f"relative change vs baseline >= {t.change_relative:+.4f}")
            if t.change_direction and not t.change_checked:
                bounds.append("(not checked: no baseline)")
            verdict = {True: "passed", False: "FAILED", None: "no verdict"}[t.passed]
            rows.append(
                {
                    "slice": where,
                    "metric": t.metric,
                    "threshold": " ".join(bounds) or "-",
                    "value": "-" if t.value is None else f"{t.value:.4f}",
                    "result": verdict,
                }
            )
        return rows

    def provenance_rows(self) -> list[tuple[str, str]]:
        return [
            ("pipeline", self.pipeline or NOT_RECORDED),
            ("pipeline run id", self.run_id or NOT_RECORDED),
            ("Trainer model artifact", _artifact(self.model_artifact_id, self.model_uri)),
            ("Evaluator output (TFMA)", self.evaluation_dir or NOT_RECORDED),
            ("Trainer run directory", self.model_run_dir or NOT_RECORDED),
            ("SavedModel saved_model_checksum", self.saved_model_checksum or NOT_RECORDED),
            ("sha256 of the model's files (card aside)", self.files_sha256 or NOT_RECORDED),
            ("Trainer code fingerprint", self.trainer_code_fingerprint or NOT_RECORDED),
        ]


def _artifact(artifact_id: int | None, uri: str | None) -> str:
    if artifact_id is None and uri is None:
        return NOT_RECORDED
    return f"id {artifact_id} at {uri}" if artifact_id is not None else str(uri)


def _plain(value: Any) -> str:
    return "none" if value is None else str(value)


# --- Reading the facts -------------------------------------------------------------


def _exists(path: str) -> bool:
    return object_store.exists(path) if is_url(path) else os.path.exists(path)


def _read_text(path: str) -> str:
    if is_url(path):
        return object_store.read_bytes(path).decode("utf-8")
    return Path(path).read_text(encoding="utf-8")


def sibling_output(artifact_uri: str, output_key: str) -> str | None:
    """Another output of the execution that produced ``artifact_uri``.

    TFX names an output artifact's directory ``<root>/<node>/<output key>/<execution id>``
    (local and Airflow runs) or ``<root>/<job>/<node>/<output key>`` (Kubeflow v2), so
    the Evaluator's ``evaluation`` sits beside its ``blessing`` and the Trainer's
    ``model_run`` beside its ``model``. The stock Pusher takes neither as an input;
    reaching them this way keeps the Pusher's inputs (and so every orchestrator's
    compiled pipeline) unchanged. None when no such directory exists.
    """
    parts = artifact_uri.rstrip("/").split("/")
    for index in (len(parts) - 2, len(parts) - 1):
        if index > 0 and parts[index] in ("blessing", "model"):
            candidate = "/".join([*parts[:index], output_key, *parts[index + 1 :]])
            if _exists(candidate):
                return candidate
    return None


def read_sources(model_dir: str) -> list[dict[str, Any]]:
    """The training spans and their source files' sha256, as the Trainer wrote them into
    the model (``trainer/export.py``, the same file the Pusher records in ML Metadata)."""
    path = f"{model_dir.rstrip('/')}/{SOURCES_FILE}"
    if not _exists(path):
        return []
    return list(json.loads(_read_text(path)).get("sources", []))


def _card_file(rel: str) -> bool:
    return rel in CARD_FILES or rel.startswith(REPORT_DIR + "/")


def model_digest(root: str | os.PathLike) -> str:
    """sha256 over every file's relative path and bytes under ``root``, the card's files
    and the evaluation report's copy left out: ``serving.publish.tree_digest`` of the
    Trainer's export, and of any version published from it with its card."""
    digest = hashlib.sha256()
    if is_url(root):
        for rel in object_store.files_under(str(root)):
            if _card_file(rel):
                continue
            digest.update(rel.encode())
            digest.update(b"\0")
            digest.update(object_store.read_bytes(object_store.join(str(root), rel)))
        return digest.hexdigest()
    base = Path(root)
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = str(path.relative_to(base))
        if _card_file(rel):
            continue
        digest.update(rel.encode())
        digest.update(b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _saved_model_checksum(model_dir: str) -> str | None:
    if not _exists(os.path.join(model_dir, "fingerprint.pb")):
        return None
    import tensorflow as tf

    try:
        return str(tf.saved_model.experimental.read_fingerprint(model_dir).saved_model_checksum)
    except Exception as error:  # noqa: BLE001 - an unreadable fingerprint is "not recorded"
        logging.warning("model card: cannot read %s/fingerprint.pb: %s", model_dir, error)
        return None


ACCURACY_METRIC = "sparse_categorical_accuracy"
EXAMPLE_COUNT_METRIC = "example_count"
LABEL_KEY = "label"


@dataclass(frozen=True)
class Accuracy:
    """Overall and per-class accuracy and example counts, as the Evaluator's TFMA wrote them."""

    overall: float
    example_count: int | None
    per_class: dict[int, float]
    per_class_count: dict[int, int]


@dataclass(frozen=True)
class Threshold:
    """One threshold of the Evaluator's eval config, with TFMA's verdict on it."""

    slice: str  # "overall" or "label=3"
    label: int | None
    metric: str
    lower_bound: float | None = None
    upper_bound: float | None = None
    change_absolute: float | None = None
    change_relative: float | None = None
    change_direction: str | None = None
    change_checked: bool = False
    value: float | None = None
    passed: bool | None = None


@dataclass(frozen=True)
class Gate:
    validation_ok: bool | None
    has_baseline: bool
    thresholds: tuple[Threshold, ...]


# The Evaluator's output is read here rather than through report/reading.py, which reads
# the same files for the evaluation report: importing ``report`` would make the whole
# report package (its page template included) part of the Pusher's code fingerprint
# (pipeline/fingerprints.py), and every edit of the report's page would re-run the Pusher.


def _slice_of(keys: list[tuple[str, Any]]) -> tuple[bool, int | None]:
    """(is the overall slice, the label of a single ``label`` slice or None)."""
    if not keys:
        return True, None
    if len(keys) != 1 or keys[0][0] != LABEL_KEY:
        return False, None
    value = keys[0][1]
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return False, int(float(value))
    except ValueError:
        return False, None


def _proto_slice(slice_key: Any) -> tuple[bool, int | None]:
    keys = []
    for key in slice_key.single_slice_keys:
        kind = key.WhichOneof("kind")
        keys.append((key.column, getattr(key, kind) if kind else None))
    return _slice_of(keys)


def read_accuracy(evaluation_dir: str) -> tuple[Accuracy, Gate]:
    """The candidate model's accuracy overall and per class (``tfma.load_metrics``) and
    every configured threshold with TFMA's verdict (``tfma.load_validation_result``)."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.writers import eval_config_writer

    eval_config, _, _, _ = eval_config_writer.load_eval_run(evaluation_dir)
    if eval_config is None:
        raise FileNotFoundError(f"{evaluation_dir}: no eval_config.json from the Evaluator")
    names = [spec.name for spec in eval_config.model_specs if not spec.is_baseline]
    model_name = names[0] if names else ""
    overall, total, per_class, counts = None, None, {}, {}
    for metrics in tfma.load_metrics(evaluation_dir):
        is_overall, label = _proto_slice(metrics.slice_key)
        if not is_overall and label is None:
            continue
        for entry in metrics.metric_keys_and_values:
            key = entry.key
            if key.is_diff or key.model_name != model_name or key.HasField("sub_key"):
                continue
            if key.HasField("example_weighted") and key.example_weighted.value:
                continue
            value = entry.value.double_value.value
            if key.name == ACCURACY_METRIC:
                if is_overall:
                    overall = value
                else:
                    per_class[label] = value
            elif key.name == EXAMPLE_COUNT_METRIC:
                if is_overall:
                    total = int(round(value))
                else:
                    counts[label] = int(round(value))
    if overall is None:
        raise LookupError(f"{evaluation_dir}: no overall {ACCURACY_METRIC} of {model_name!r}")
    accuracy = Accuracy(
        overall, total, dict(sorted(per_class.items())), dict(sorted(counts.items()))
    )

    validation = None
    if tf.io.gfile.glob(os.path.join(evaluation_dir, "validations*")):
        validation = tfma.load_validation_result(evaluation_dir)
    failed: set[tuple[str, str]] = set()
    if validation is not None:
        for per_slice in validation.metric_validations_per_slice:
            is_overall, label = _proto_slice(per_slice.slice_key)
            where = "overall" if is_overall else f"{LABEL_KEY}={label}"
            failed.update((where, f.metric_key.name) for f in per_slice.failures)
    has_baseline = any(spec.is_baseline for spec in eval_config.model_specs)
    thresholds = []
    for metrics_spec in eval_config.metrics_specs:
        for metric in metrics_spec.metrics:
            name = "".join(
                f"_{c.lower()}" if c.isupper() and i else c.lower()
                for i, c in enumerate(metric.class_name)
            )
            for per_slice in metric.per_slice_thresholds:
                for spec in per_slice.slicing_specs:
                    values = dict(spec.feature_values)
                    is_overall, label = _slice_of(sorted(values.items()))
                    if spec.feature_keys or (not is_overall and label is None):
                        continue
                    where = "overall" if is_overall else f"{LABEL_KEY}={label}"
                    value = None
                    if name == ACCURACY_METRIC:
                        value = overall if is_overall else per_class.get(label)
                    thresholds.append(
                        Threshold(
                            slice=where,
                            label=label,
                            metric=name,
                            **_bounds(per_slice.threshold, has_baseline),
                            value=value,
                            passed=None if validation is None else (where, name) not in failed,
                        )
                    )
    gate = Gate(
        validation_ok=None if validation is None else bool(validation.validation_ok),
        has_baseline=has_baseline,
        thresholds=tuple(thresholds),
    )
    return accuracy, gate


def _bounds(threshold: Any, has_baseline: bool) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if threshold.HasField("value_threshold"):
        value = threshold.value_threshold
        if value.HasField("lower_bound"):
            bounds["lower_bound"] = value.lower_bound.value
        if value.HasField("upper_bound"):
            bounds["upper_bound"] = value.upper_bound.value
    if threshold.HasField("change_threshold"):
        change = threshold.change_threshold
        if change.HasField("absolute"):
            bounds["change_absolute"] = change.absolute.value
        if change.HasField("relative"):
            bounds["change_relative"] = change.relative.value
        directions = change.DESCRIPTOR.fields_by_name["direction"].enum_type
        name = directions.values_by_number[change.direction].name
        bounds["change_direction"] = name.lower().replace("_", " ")
        bounds["change_checked"] = has_baseline
    return bounds


def read_training_stats(model_run_dir: str) -> dict[str, Any] | None:
    """The Trainer's ``training_stats.json`` (trainer/train.py), if it is there."""
    path = f"{model_run_dir.rstrip('/')}/training_stats.json"
    return json.loads(_read_text(path)) if _exists(path) else None


def gather_facts(
    *,
    model_dir: str,
    model_name: str,
    version: int,
    blessing: Any | None,
    model_artifact: Any | None = None,
    card_config: dict[str, Any] | None = None,
    baseline_version: int | None = None,
    pipeline: str | None = None,
    run_id: str | None = None,
) -> CardFacts:
    """The card's facts for the Trainer's export in ``model_dir`` (local, or a URL)
    about to be published as ``version``. ``blessing`` and ``model_artifact`` are the
    Pusher's input artifacts; ``card_config`` is the Pusher's ``custom_config["model_card"]``
    (dataset, class names, hyperparameters, the Trainer's code fingerprint)."""
    card_config = dict(card_config or {})
    sources = read_sources(model_dir)
    dataset = card_config.get("dataset") or next(
        (s["dataset"] for s in sources if s.get("dataset")), NOT_RECORDED
    )
    class_names = list(card_config.get("class_names") or [])
    if not class_names:
        try:
            class_names = list(get_dataset(dataset).class_names)
        except Exception:  # noqa: BLE001 - an unknown dataset keeps numeric names
            class_names = [str(i) for i in range(10)]
    facts = CardFacts(
        model_name=model_name,
        version=int(version),
        pushed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dataset=dataset,
        class_names=class_names,
        hparams=dict(card_config.get("hparams") or {}),
        sources=sources,
        pipeline=pipeline,
        run_id=run_id,
        trainer_code_fingerprint=card_config.get("trainer_code_fingerprint"),
        saved_model_checksum=_saved_model_checksum(model_dir),
        files_sha256=model_digest(model_dir),
    )
    if not sources:
        facts.missing.append(f"training data lineage: no {SOURCES_FILE} in the model")
    if model_artifact is not None:
        facts.model_artifact_id = int(model_artifact.id) if model_artifact.id else None
        facts.model_uri = model_artifact.uri
        facts.model_run_dir = sibling_output(model_artifact.uri, "model_run")
    if facts.model_run_dir is not None:
        facts.training = read_training_stats(facts.model_run_dir)
    if facts.training is None:
        facts.missing.append("training statistics: the Trainer's training_stats.json")
    if blessing is not None:
        if blessing.has_custom_property("blessed"):
            facts.blessed = bool(blessing.get_int_custom_property("blessed"))
        facts.evaluation_dir = sibling_output(blessing.uri, "evaluation")
        if blessing.has_custom_property("baseline_model"):
            baseline_uri = blessing.get_string_custom_property("baseline_model")
            baseline_id = (
                blessing.get_int_custom_property("baseline_model_id")
                if blessing.has_custom_property("baseline_model_id")
                else None
            )
            served = (
                f"served as version {baseline_version}"
                if baseline_version is not None
                else "the model served when the run started"
            )
            facts.baseline = f"{served}: model artifact {_artifact(baseline_id, baseline_uri)}"
    if facts.evaluation_dir is not None:
        try:
            facts.tfma, facts.gate = read_accuracy(facts.evaluation_dir)
        except (FileNotFoundError, LookupError) as error:
            logging.warning("model card: no TFMA result: %s", error)
            facts.tfma = facts.gate = None
    if facts.tfma is None:
        facts.missing.append("test accuracy: the Evaluator's TFMA output")
    return facts


# --- Rendering ---------------------------------------------------------------------


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(facts: CardFacts) -> str:
    """The card as Markdown: what ``mnist-tfx versions --card`` prints."""
    lines = [
        f"# Model card: {facts.model_name} version {facts.version}",
        "",
        f"- model: `{facts.model_name}`, version {facts.version}, pushed {facts.pushed_at}",
        f"- model_fn: `{facts.model_fn}` (trainer/model_fn.py)",
        f"- dataset: {facts.dataset}",
        f"- blessed by the Evaluator: {_plain(facts.blessed).lower()}",
        "",
        "## Intended use",
        "",
        facts.intended_use,
        "",
        "## Limits",
        "",
        *[f"- {limit}" for limit in LIMITS],
    ]
    if facts.hardest():
        lines.append(f"- Weakest classes on the test split: {_weak_text(facts)}.")
    lines += ["", "## Data", ""]
    if facts.example_counts():
        lines += [f"examples: {_counts_text(facts)}", ""]
    for source in facts.sources:
        lines.append(
            f"### span {source.get('span', '?')} of {source.get('dataset', '?')}"
            + ("" if source.get("recorded", True) else " (imported before lineage was recorded)")
        )
        lines.append("")
        if source.get("counts"):
            split_counts = ", ".join(f"{k} {int(v):,}" for k, v in sorted(source["counts"].items()))
            lines.append(f"span counts: {split_counts}")
        if source.get("manifest_sha256"):
            lines.append(f"manifest sha256: `{source['manifest_sha256']}`")
        lines += ["", "| source file | sha256 |", "|---|---|"]
        for stem, sha in sorted((source.get("source_sha256") or {}).items()):
            lines.append(f"| {_md_cell(stem)} | `{sha}` |")
        lines.append("")
    if not facts.sources:
        lines += [f"sources: {NOT_RECORDED}", ""]
    lines += ["## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in facts.training_rows()]
    lines += ["", "## Test accuracy (the Evaluator's TFMA)", ""]
    if facts.tfma is not None:
        lines.append(f"overall: {_overall_text(facts)}")
        lines += ["", "| class | name | accuracy | examples |", "|---|---|---|---|"]
        for label, accuracy in facts.tfma.per_class.items():
            count = facts.tfma.per_class_count.get(label)
            lines.append(
                f"| {label} | {_md_cell(facts.class_name(label))} | {accuracy:.4f} | "
                f"{'-' if count is None else count} |"
            )
        lines += ["", f"hardest classes: {_weak_text(facts)}"]
    else:
        lines.append(f"test accuracy: {NOT_RECORDED}")
    lines += ["", "## Release gate", ""]
    rows = facts.threshold_rows()
    if rows:
        lines += ["| slice | metric | threshold | value | result |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['slice']} | {r['metric']} | {r['threshold']} | {r['value']} | {r['result']} |"
            for r in rows
        ]
        lines.append("")
    else:
        lines += [f"thresholds: {NOT_RECORDED}", ""]
    lines.append(f"baseline: {facts.baseline}")
    lines += [
        "",
        "## Evaluation report",
        "",
        f"{REPORT_PENDING_MD}{facts.run_id or NOT_RECORDED} writes it right after this push "
        "and links it here (`mnist-tfx summary` prints its link too).",
        "",
        f"The numbers above are the Evaluator's, in {facts.evaluation_dir or NOT_RECORDED}.",
        "",
        "## Provenance",
        "",
        "| what | value |",
        "|---|---|",
        *[f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in facts.provenance_rows()],
    ]
    if facts.missing:
        lines += ["", "not recorded by this run: " + "; ".join(facts.missing)]
    return "\n".join(lines) + "\n"


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Model card: {{ f.model_name }} version {{ f.version }}</title>
<style>
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
code { font-size: 0.9em; } .failed { color: #b00; font-weight: bold; }
.hard { background: #fde8e8; }
</style></head><body>
<h1>Model card: {{ f.model_name }} version {{ f.version }}</h1>
<ul>
<li>model: <code>{{ f.model_name }}</code>, version {{ f.version }}, pushed {{ f.pushed_at }}</li>
<li>model_fn: <code>{{ f.model_fn }}</code></li>
<li>dataset: {{ f.dataset }}</li>
<li>blessed by the Evaluator: {{ blessed }}</li>
</ul>
<h2>Intended use</h2><p>{{ f.intended_use }}</p>
<h2>Limits</h2><ul>
{% for limit in limits %}<li>{{ limit }}</li>
{% endfor %}
{% if hardest %}<li>Weakest classes on the test split: {{ weak }}.</li>{% endif %}
</ul>
<h2>Data</h2>
{% if counts %}<p>examples: {{ counts }}</p>{% endif %}
{% for s in f.sources %}
<h3>span {{ s.get("span", "?") }} of {{ s.get("dataset", "?") }}</h3>
{% if s.get("manifest_sha256") %}
<p>manifest sha256: <code>{{ s["manifest_sha256"] }}</code></p>
{% endif %}
<table><tr><th>source file</th><th>sha256</th></tr>
{% for stem, sha in (s.get("source_sha256") or {})|dictsort %}
<tr><td>{{ stem }}</td><td><code>{{ sha }}</code></td></tr>
{% endfor %}
</table>
{% else %}<p>sources: not recorded</p>{% endfor %}
<h2>Training</h2>
<table><tr><th>setting</th><th>value</th></tr>
{% for k, v in f.training_rows() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>
{% endfor %}</table>
<h2>Test accuracy (the Evaluator's TFMA)</h2>
{% if f.tfma %}<p>overall: <b>{{ overall }}</b></p>
<table><tr><th>class</th><th>name</th><th>accuracy</th><th>examples</th></tr>
{% for label, acc in f.tfma.per_class.items() %}
<tr{% if label in hard_labels %} class="hard"{% endif %}><td>{{ label }}</td>
<td>{{ f.class_name(label) }}</td><td>{{ "%.4f"|format(acc) }}</td>
<td>{{ f.tfma.per_class_count.get(label, "-") }}</td></tr>
{% endfor %}
</table>
{% else %}<p>test accuracy: not recorded</p>{% endif %}
<h2>Release gate</h2>
{% if rows %}
<table><tr><th>slice</th><th>metric</th><th>threshold</th><th>value</th><th>result</th></tr>
{% for r in rows %}
<tr><td>{{ r.slice }}</td><td>{{ r.metric }}</td><td>{{ r.threshold }}</td><td>{{ r.value }}</td>
<td{% if r.result == "FAILED" %} class="failed"{% endif %}>{{ r.result }}</td></tr>
{% endfor %}
</table>
{% else %}<p>thresholds: not recorded</p>{% endif %}
<p>baseline: {{ f.baseline }}</p>
<h2>Evaluation report</h2>
<p id="evaluation-report">Not linked yet: the EvaluationReport component of run
{{ f.run_id or "not recorded" }} writes it right after this push and links it here
(<code>mnist-tfx summary</code> prints its link too).</p>
<p>The numbers above are the Evaluator's, in
<code>{{ f.evaluation_dir or "not recorded" }}</code>.</p>
<h2>Provenance</h2>
<table>{% for k, v in f.provenance_rows() %}<tr><td>{{ k }}</td><td><code>{{ v }}</code></td></tr>
{% endfor %}</table>
{% if f.missing %}<p>not recorded by this run: {{ f.missing|join("; ") }}</p>{% endif %}
</body></html>
"""


def render_html(facts: CardFacts) -> str:
    """The same card as one self-contained HTML page (inline CSS, no external assets),
    autoescaped so whatever the facts hold reaches the page as text."""
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    hardest = facts.hardest()
    return env.from_string(_HTML).render(
        f=facts,
        blessed=_plain(facts.blessed).lower(),
        limits=LIMITS,
        hardest=hardest,
        weak=_weak_text(facts),
        hard_labels={label for label, _ in hardest},
        counts=_counts_text(facts),
        overall=_overall_text(facts),
        rows=facts.threshold_rows(),
    )


def _weak_text(facts: CardFacts) -> str:
    return ", ".join(f"{facts.describe(k)}: {a:.4f}" for k, a in facts.hardest())


def _counts_text(facts: CardFacts) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in facts.example_counts().items())


def _overall_text(facts: CardFacts) -> str:
    if facts.tfma is None:
        return NOT_RECORDED
    total = facts.tfma.example_count
    return f"{facts.tfma.overall:.4f}" + (f" on {total:,} test images" if total is not None else "")


def write_card(version_dir: str | os.PathLike, facts: CardFacts) -> list[str]:
    """Write both files into ``version_dir/assets.extra/`` (a local directory or a URL),
    each replaced whole (a local file through a rename). Returns the paths written."""
    written = []
    for name, text in ((CARD_MD, render_markdown(facts)), (CARD_HTML, render_html(facts))):
        path = _join(str(version_dir), ASSETS_EXTRA, name)
        if not is_url(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_text(path, text)
        written.append(path)
    return written


def link_report(
    version_dir: str, report_dir: str | os.PathLike, report_uri: str, run_id: str | None
) -> list[str]:
    """Put the evaluation report beside the card of a pushed version and link it.

    The EvaluationReport component runs after the Pusher (its page says what was
    pushed), so the card cannot name the report when the version is published. This
    is called by that component once its page exists: the report's files (the local
    directory ``report_dir``) are copied into ``version_dir/assets.extra/evaluation_report/``,
    so the report travels with the version like the card, and the card's "not linked
    yet" line becomes a link to that copy (relative, valid wherever the version is
    copied) and names ``report_uri``, where the run wrote it. Files under
    ``assets.extra`` are read by neither TF Serving nor ``serving/verify.py`` and are
    left out of ``model_digest``, so adding them changes nothing about the served model.

    ``version_dir`` is a local directory or an object-store URL. Returns the paths
    written; raises FileNotFoundError when the version has no card to link from."""
    card_md = _join(version_dir, ASSETS_EXTRA, CARD_MD)
    card_html = _join(version_dir, ASSETS_EXTRA, CARD_HTML)
    if not _exists(card_md) or not _exists(card_html):
        raise FileNotFoundError(f"{card_md}: no model card in version {version_dir}")
    written = _copy_report(Path(report_dir), version_dir)
    run = run_id or NOT_RECORDED
    md_line = (
        f"{REPORT_LINKED_MD}{run}]({REPORT_LINK}): a copy beside this card "
        f"(`{REPORT_DIR}/`); the run wrote it to {report_uri}."
    )
    html_paragraph = (
        f'<p id="evaluation-report"><a href="{_escape(REPORT_LINK)}">The evaluation report '
        f"of run {_escape(run)}</a>: a copy beside this card (<code>{REPORT_DIR}/</code>); "
        f"the run wrote it to <code>{_escape(report_uri)}</code>.</p>"
    )
    md = _read_text(card_md)
    lines = md.split("\n")
    lines = [
        md_line if line.startswith((REPORT_PENDING_MD, REPORT_LINKED_MD)) else line
        for line in lines
    ]
    html = REPORT_PARAGRAPH.sub(lambda _: html_paragraph, _read_text(card_html), count=1)
    for path, text in ((card_md, "\n".join(lines)), (card_html, html)):
        _write_text(path, text)
        written.append(path)
    return written


def _escape(text: str) -> str:
    return str(markupsafe.escape(text))


def _join(base: str, *parts: str) -> str:
    return object_store.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def _write_text(path: str, text: str) -> None:
    """Replace the file whole: a rename locally, one object PUT on an object store."""
    if is_url(path):
        object_store.write_bytes(path, text.encode("utf-8"))
        return
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _copy_report(report_dir: Path, version_dir: str) -> list[str]:
    files = sorted(p for p in report_dir.rglob("*") if p.is_file())
    if is_url(version_dir):
        written = []
        for path in files:
            target = object_store.join(version_dir, REPORT_DIR, *path.relative_to(report_dir).parts)
            object_store.write_bytes(target, path.read_bytes())
            written.append(target)
        return written
    target = Path(version_dir) / REPORT_DIR
    staging = target.parent / f".{target.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(report_dir, staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return [str(target / path.relative_to(report_dir)) for path in files]
