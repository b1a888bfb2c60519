"""Trained networks for runtimes without this project: ONNX and TorchScript (``graph``).

Used by the ``export`` command (``stages/export.py``) and its benchmark, by
no DVC stage: editing it re-runs nothing.
"""
