"""Experiment tracking with MLflow; the only package that talks to MLflow.

- ``store``: where runs go (tracking URI, experiment), provenance tags, closing runs of dead processes.
- ``values``: nested params and metrics flattened to MLflow's names and limits.
- ``run``: ``Tracker``, one run that always ends FINISHED, FAILED or KILLED.
- ``sync``: one run per result (the run key), found or created.
- ``record``: what a dataset's run holds, for train, evaluate and track alike.
"""
