"""The names of the files in a report's directory: the page, report.json and the PNGs."""

HTML_FILE = "index.html"
JSON_FILE = "report.json"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
CLASS_ACCURACY_PNG = "class_accuracy.png"
PREDICTIONS_PNG = "predictions.png"
MISTAKES_PNG = "confident_mistakes.png"
TRAINING_CURVES_PNG = "training_curves.png"
