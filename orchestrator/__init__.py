"""The orchestrator: the ``sotalign`` command line, Ray Train runs, Ray Tune + Optuna sweeps and
the MLflow conventions.

Holds no method logic: everything it runs comes from the ``sotalign`` library.
"""
