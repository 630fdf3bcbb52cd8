"""The page ``mnist-tfx monitor`` writes: a sample of the images the served model
received with the class it gave each, the served profile beside the training data's
and the previous window's, and every comparison with its distance, bound and verdict.
Self-contained like the evaluation report: figures as data: URIs, inline CSS, no
script and no network address; rendered through Jinja2 with autoescaping."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from report.figures import _new_figure, figure_png
from report.page import _environment

TEMPLATE = "monitor.html"
GRID_COLUMNS = 10


def draw_sample_grid(
    images: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], count: int = 40
) -> bytes:
    """Up to ``count`` served images (uint8 [N, 784], evenly spaced over the window),
    each titled with the class the model gave it, as PNG bytes."""
    chosen = np.linspace(0, len(images) - 1, num=min(count, len(images))).astype(int)
    rows = max(1, -(-len(chosen) // GRID_COLUMNS))
    figure = _new_figure(GRID_COLUMNS * 0.9, rows * 1.05)
    for position, index in enumerate(chosen):
        axis = figure.add_subplot(rows, GRID_COLUMNS, position + 1)
        axis.imshow(images[index].reshape(28, 28), cmap="binary", vmin=0, vmax=255)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(str(class_names[int(predicted[index])]), fontsize=7)
    return figure_png(figure)


def draw_distributions(
    profiles: Mapping[str, Any], features: Sequence[str], class_names: Sequence[str]
) -> bytes:
    """One panel per profile feature and one for the classes: each profile's share per
    bucket (or class), the profiles side by side."""
    panels = [*features, "label"]
    figure = _new_figure(4.2 * len(panels), 3.0)
    width = 0.8 / max(1, len(profiles))
    for column, feature in enumerate(panels):
        axis = figure.add_subplot(1, len(panels), column + 1)
        for offset, (name, profile) in enumerate(profiles.items()):
            counts = np.array(
                profile.label_counts if feature == "label" else profile.histograms[feature],
                dtype=np.float64,
            )
            shares = counts / counts.sum() if counts.sum() else counts
            positions = np.arange(len(shares)) + offset * width
            axis.bar(positions, shares, width=width, label=name)
        if feature == "label":
            axis.set_title("class (training: true label; served: predicted)", fontsize=8)
            axis.set_xticks(np.arange(len(class_names)), [str(c)[:7] for c in class_names],
                            fontsize=6, rotation=60)  # fmt: skip
        else:
            axis.set_title(f"{feature} (buckets over 0..1)", fontsize=8)
            axis.set_xticks([0, 5, 10, 15, 20], ["0", ".25", ".5", ".75", "1"], fontsize=7)
        axis.tick_params(axis="y", labelsize=7)
        if column == 0:
            axis.legend(fontsize=7)
    figure.tight_layout()
    return figure_png(figure)


def render_monitor_html(facts: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    figures = {
        name: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        for name, png in pngs.items()
    }
    return _environment().get_template(TEMPLATE).render(facts=facts, figures=figures)
