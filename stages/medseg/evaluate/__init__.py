"""Evaluation: metrics, per-image scores and their summary, the evaluate and compare stages' work.

- ``metrics``: Dice, IoU, HD95 per class on label maps; bootstrap intervals; confusion matrices.
- ``scoring``: per-image rows, ``eval.json`` (``aggregate``), cross-validation means, best and worst cases.
- ``run``: ``evaluate_dataset``, every round's model on its test images at native resolution.
- ``summary``: ``write_summary``, one table and chart over every active dataset (the compare stage).
"""
