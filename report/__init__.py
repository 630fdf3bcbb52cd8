"""The evaluation report of one pipeline run: one self-contained ``index.html`` (every
figure inline as a base64 PNG, inline CSS, no script and no network address), the
PNG files and ``report.json`` with the facts and figures.

It shows the confusion matrix of the model's serving signature on the test split
(the official test set, the one the Evaluator gates on), per-class accuracy as the
Evaluator's TFMA computed it, grids of test images with their probabilities (the
first ones and the most confidently wrong), the training curves (training and
validation split per epoch), and the run's facts (dataset, model, hyperparameters,
counts, gate, push, ML Metadata ids).

- ``reading``: the data classes and the readers of TFMA / TFX outputs;
- ``metrics``: confusion matrix, per-class recall, mistakes, agreement with TFMA;
- ``figures``: the matplotlib figures and their PNG bytes;
- ``page``: the page's context and its Jinja2 template, ``templates/report.html``;
- ``build``: ``build_report`` and ``write_report``; ``files``: the files' names.

Nothing here knows TFX artifacts or ML Metadata: ``components/evaluation_report/``
turns a run's artifacts into a ``ReportData``.
"""

from report.build import DEFAULT_GRID_IMAGES, build_report, write_report
from report.figures import (
    GRID_COLUMNS,
    draw_class_accuracy,
    draw_confusion_matrix,
    draw_prediction_grid,
    draw_training_curves,
    figure_png,
    png_size,
)
from report.files import (
    CLASS_ACCURACY_PNG,
    CONFUSION_MATRIX_PNG,
    HTML_FILE,
    JSON_FILE,
    MISTAKES_PNG,
    PREDICTIONS_PNG,
    TRAINING_CURVES_PNG,
)
from report.metrics import (
    AGREEMENT_TOLERANCE,
    confusion_matrix,
    most_confident_mistakes,
    per_class_recall,
    tfma_agreement,
)
from report.page import render_html
from report.reading import (
    ACCURACY_METRIC,
    EXAMPLE_COUNT_METRIC,
    SERVING_SIGNATURE,
    TRAINING_STATS_FILE,
    EvalPredictions,
    Gate,
    ReportData,
    RunFacts,
    TfmaAccuracy,
    Threshold,
    candidate_model_name,
    predict_split,
    read_eval_config,
    read_gate,
    read_tfma_accuracy,
    read_training_stats,
)

__all__ = [
    "ACCURACY_METRIC",
    "AGREEMENT_TOLERANCE",
    "CLASS_ACCURACY_PNG",
    "CONFUSION_MATRIX_PNG",
    "DEFAULT_GRID_IMAGES",
    "EXAMPLE_COUNT_METRIC",
    "GRID_COLUMNS",
    "HTML_FILE",
    "JSON_FILE",
    "MISTAKES_PNG",
    "PREDICTIONS_PNG",
    "SERVING_SIGNATURE",
    "TRAINING_CURVES_PNG",
    "TRAINING_STATS_FILE",
    "EvalPredictions",
    "Gate",
    "ReportData",
    "RunFacts",
    "TfmaAccuracy",
    "Threshold",
    "build_report",
    "candidate_model_name",
    "confusion_matrix",
    "draw_class_accuracy",
    "draw_confusion_matrix",
    "draw_prediction_grid",
    "draw_training_curves",
    "figure_png",
    "most_confident_mistakes",
    "per_class_recall",
    "png_size",
    "predict_split",
    "read_eval_config",
    "read_gate",
    "read_tfma_accuracy",
    "read_training_stats",
    "render_html",
    "tfma_agreement",
    "write_report",
]
