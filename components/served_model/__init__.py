"""The resolver that hands the pipeline the model TF Serving serves now, as the
Evaluator's baseline and the data validator's reference (``resolver.py``)."""
