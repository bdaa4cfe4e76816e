"""The orchestrator: the ``sotalign`` command line, and (later) Ray Train / Tune and MLflow.

Holds no method logic: everything it runs comes from the ``sotalign`` library.
"""
