"""``mnist-tfx reproduce``: every registered model trained through the real
pipeline on both datasets, next to the number its tutorial reported.

Each (model, dataset) pair is its own pipeline (``reproduce_<dataset>_<model>``,
own ML Metadata store, own serving base path ``<output_root>/serving/<dataset>_<model>``),
so runs do not mix with each other or with ``mnist-tfx run``. The gate is off
(accuracy floors 0): a reproduction measures, it does not decide releases. Runs
are cached like any pipeline run, so a second ``reproduce`` only re-runs what
changed; the table's training seconds come from the Trainer execution that
produced the model, not from the (possibly cached) re-run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ingest.datasets import get_dataset
from pipeline.config import DEFAULT_BEAM_ARGS, RunConfig
from trainer.hparams import MODEL_DEFAULTS, hparams_for_model

DATASETS = ("mnist", "fashion_mnist")
# Table order: the tutorials' order of appearance in the project's history.
MODELS = ("softmax", "mlp", "deep_cnn", "cnn_model_fn")


@dataclass
class ReproductionRow:
    model: str
    dataset: str
    # The tutorial's own dataset: only there is its number comparable.
    tutorial_dataset: bool
    tutorial_accuracy: float | None
    tutorial: str
    accuracy: float | None
    steps: int | None
    epochs: int | None
    batch_size: int
    train_seconds: float | None
    wall_seconds: float
    what_was_run: str
    pipeline_name: str
    pushed_version: str | None


def run_one(
    model: str,
    dataset: str,
    output_root: Path,
    data_dir: Path,
    source: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    beam_args: Sequence[str] = DEFAULT_BEAM_ARGS,
) -> ReproductionRow:
    from pipeline.local_runner import run_local
    from pipeline.run_summary import summarize_run

    defaults = MODEL_DEFAULTS[model]
    hparams = hparams_for_model(model, dict(overrides or {}), dataset=dataset)
    config = RunConfig(
        dataset=dataset,
        output_root=output_root,
        data_dir=data_dir,
        source=source,
        pipeline_name=f"reproduce_{dataset}_{model}",
        serving_root=output_root / "serving",
        model_name=f"{dataset}_{model}",
        min_accuracy=0.0,
        min_class_accuracy=0.0,
        hparams=hparams.to_params(),
        beam_args=tuple(beam_args),
    )
    started = time.perf_counter()
    run_local(config)
    wall = time.perf_counter() - started
    summary = summarize_run(str(config.metadata), config.name, get_dataset(dataset).class_names)
    training = summary.training or {}
    return ReproductionRow(
        model=model,
        dataset=dataset,
        tutorial_dataset=dataset == defaults.dataset,
        tutorial_accuracy=defaults.headline_accuracy if dataset == defaults.dataset else None,
        tutorial=defaults.tutorial,
        accuracy=summary.accuracy,
        steps=training.get("steps"),
        epochs=training.get("epochs"),
        batch_size=hparams.batch_size,
        train_seconds=training.get("fit_seconds"),
        wall_seconds=round(wall, 1),
        what_was_run=defaults.description if not overrides else f"overrides {dict(overrides)}",
        pipeline_name=config.name,
        pushed_version=summary.pushed_version,
    )


def _percent(value: float | None) -> str:
    return f"{100 * value:.2f}%" if value is not None else "n/a"


def format_markdown(rows: Sequence[ReproductionRow]) -> str:
    lines = [
        "| model | dataset | tutorial's number | ours | steps (epochs, batch) "
        "| training s | run wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        tutorial = _percent(row.tutorial_accuracy) if row.tutorial_dataset else "(other dataset)"
        lines.append(
            f"| {row.model} | {row.dataset} | {tutorial} | {_percent(row.accuracy)} "
            f"| {row.steps or 0:,} ({row.epochs or 0}, {row.batch_size}) "
            f"| {row.train_seconds or 0:.0f} | {row.wall_seconds:.0f} |"
        )
    lines.append("")
    lines.append("What each model runs:")
    for model in dict.fromkeys(row.model for row in rows):
        defaults = MODEL_DEFAULTS[model]
        lines.append(
            f"- `{model}` ({defaults.tutorial}; {defaults.headline}): {defaults.description}"
        )
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[ReproductionRow], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / "reproduction.md"
    markdown.write_text(format_markdown(rows), encoding="utf-8")
    as_json = directory / "reproduction.json"
    as_json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")
    return markdown, as_json
