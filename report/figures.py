"""The report's figures, drawn with matplotlib's Agg renderer (no display, no pyplot
state): the confusion matrix, per-class accuracy, prediction grids and training
curves, and their PNG bytes."""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ingest.datasets import NUM_CLASSES
from report.reading import EvalPredictions, TfmaAccuracy

# The tutorial's grid: 5 rows of 3 (image, probabilities) pairs.
GRID_COLUMNS = 3

_CORRECT_COLOUR = "blue"
_WRONG_COLOUR = "red"
_OTHER_BAR_COLOUR = "#777777"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    # Matplotlib's Agg raster renderer; no display or pyplot state involved.
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure, tight: bool = True) -> bytes:
    """The figure as PNG bytes; ``tight`` crops to what is drawn (one more layout pass)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight" if tight else None, facecolor="white")
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, read from the PNG header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def draw_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Counts in every cell, colour by the share of the row (the true class)."""
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    figure = _new_figure(8.5, 7.5)
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for true in range(matrix.shape[0]):
        for pred in range(matrix.shape[1]):
            ax.text(
                pred,
                true,
                str(int(matrix[true, pred])),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if shares[true, pred] > 0.6 else "black",
            )
    ticks = range(len(class_names))
    ax.set_xticks(ticks, [f"{i} {n}" if n != str(i) else n for i, n in enumerate(class_names)])
    ax.set_yticks(ticks, [f"{i} {n}" if n != str(i) else n for i, n in enumerate(class_names)])
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total, right = int(matrix.sum()), int(np.trace(matrix))
    ax.set_title(
        f"Confusion matrix: {total:,} test examples, {right:,} right ({right / total:.1%})"
        if total
        else "Confusion matrix: no test examples"
    )
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return figure


def draw_class_accuracy(
    tfma_accuracy: TfmaAccuracy,
    class_names: Sequence[str],
    class_floors: Mapping[int, float] | None = None,
    overall_floor: float | None = None,
) -> Figure:
    """TFMA's accuracy on each ``label`` slice as bars, its overall accuracy and the
    blessing floors as lines; bars under their floor in red."""
    class_floors = dict(class_floors or {})
    labels = list(range(len(class_names)))
    values = [tfma_accuracy.per_class.get(label, 0.0) for label in labels]
    colours = [
        _WRONG_COLOUR if label in class_floors and value < class_floors[label] else "#4c72b0"
        for label, value in zip(labels, values, strict=True)
    ]
    figure = _new_figure(10, 4.8)
    ax = figure.add_subplot()
    bars = ax.bar(labels, values, color=colours)
    for bar, label in zip(bars, labels, strict=True):
        if label not in tfma_accuracy.per_class:
            text = "n/a"
        else:
            text = f"{tfma_accuracy.per_class[label]:.3f}"
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + 0.01,
            text,
            ha="center",
            va="bottom",
            fontsize=8,
        )
    for label, floor in class_floors.items():
        ax.hlines(floor, label - 0.45, label + 0.45, colors=_WRONG_COLOUR, linewidth=2)
    if tfma_accuracy.overall is not None:
        ax.axhline(
            tfma_accuracy.overall,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"overall {tfma_accuracy.overall:.4f}",
        )
    if overall_floor is not None:
        ax.axhline(
            overall_floor,
            color=_WRONG_COLOUR,
            linestyle=":",
            linewidth=1,
            label=f"overall floor {overall_floor:g}",
        )
    if class_floors:
        ax.plot([], [], color=_WRONG_COLOUR, linewidth=2, label="class floor")
    ax.set_xticks(labels, [f"{i} {n}" if n != str(i) else n for i, n in enumerate(class_names)])
    ax.tick_params(axis="x", labelrotation=30 if max(map(len, class_names)) > 2 else 0)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right" if max(map(len, class_names)) > 2 else "center")
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("accuracy on the class's test examples")
    ax.set_title("Accuracy per true class (the Evaluator's TFMA slices label=N)")
    ax.legend(loc="upper right", ncols=3, fontsize=8)
    return figure


def draw_prediction_grid(
    predictions: EvalPredictions,
    indices: Sequence[int],
    class_names: Sequence[str],
    title: str,
    columns: int = GRID_COLUMNS,
) -> Figure:
    """Each image with "predicted confidence% (true)" under it (blue when right, red
    when wrong) and beside it the bar chart of its ten probabilities (predicted bar
    red, true bar blue), as the Fashion-MNIST basic-classification tutorial drew them."""
    count = len(indices)
    rows = max(1, math.ceil(count / columns))
    figure = _new_figure(4.2 * columns, 2.3 * rows + 0.6)
    grid = figure.add_gridspec(rows, 2 * columns, width_ratios=[1, 1.25] * columns)
    for position, index in enumerate(indices):
        row, column = divmod(position, columns)
        true, predicted = int(predictions.labels[index]), int(predictions.predicted[index])
        confidence = float(predictions.confidence[index])
        colour = _CORRECT_COLOUR if true == predicted else _WRONG_COLOUR

        image_ax = figure.add_subplot(grid[row, 2 * column])
        image_ax.imshow(predictions.images[index], cmap="binary")
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        image_ax.set_xlabel(
            f"{class_names[predicted]} {confidence:.0%} ({class_names[true]})",
            color=colour,
            fontsize=8,
        )
        image_ax.set_title(f"#{index}", fontsize=7, color="#555555")

        bars_ax = figure.add_subplot(grid[row, 2 * column + 1])
        bars = bars_ax.bar(
            range(NUM_CLASSES), predictions.probabilities[index], color=_OTHER_BAR_COLOUR
        )
        bars[predicted].set_color(_WRONG_COLOUR)
        # Drawn after the predicted bar, so a right prediction shows blue.
        bars[true].set_color(_CORRECT_COLOUR)
        bars_ax.set_ylim(0, 1)
        bars_ax.set_xticks(range(NUM_CLASSES), [str(i) for i in range(NUM_CLASSES)], fontsize=6)
        bars_ax.set_yticks([])
    height = figure.get_figheight()
    figure.suptitle(title, fontsize=11, y=1 - 0.12 / height)
    # Fixed margins in inches: tight_layout over 30 axes costs about a second per grid.
    figure.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=0.35 / height,
        top=1 - 0.7 / height,
        wspace=0.12,
        hspace=0.45,
    )
    return figure


def draw_training_curves(history: Mapping[str, Sequence[float]]) -> Figure | None:
    """Loss and accuracy per epoch, training and validation; None without a history."""
    panels = [
        (name, f"val_{name}")
        for name in ("loss", *sorted(k for k in history if "acc" in k and not k.startswith("val_")))
        if history.get(name)
    ]
    if not panels:
        return None
    figure = _new_figure(5.5 * len(panels), 4)
    for position, (name, val_name) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, len(panels), position)
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], "o-", label="training")
        if history.get(val_name):
            ax.plot(
                range(1, len(history[val_name]) + 1),
                history[val_name],
                "s--",
                label="validation split",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name} per epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
