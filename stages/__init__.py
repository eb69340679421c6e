"""DVC stages: one thin module per stage (parse args and params, call the library, write outputs).

Paths come from dvc.yaml (command-line arguments); knobs come from params.yaml (one section each).
"""
