"""Promotion of MLflow model versions: the champion/challenger gate on held-out metrics (``gate``).

Named for what it does to a registered model, so it is not read as image registration; the register
stage (stages/register.py) logs the model, registers a version and applies the gate's decision.
"""
