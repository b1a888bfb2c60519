"""Evaluation: metrics, per-image scores and their summary, the evaluate and compare stages' work.

- ``metrics``: Dice, IoU, HD95 per class on label maps; bootstrap intervals; confusion matrices.
- ``scoring``: per-image rows, ``eval.json`` (``aggregate``), cross-validation means, best and worst cases.
- ``volumes``: the test slices of a dataset cut from CT volumes stacked back into volumes; 3D Dice, HD95 in mm.
- ``run``: ``evaluate_dataset``, every round's model on its test images at native resolution (and per volume).
- ``predict``, ``predict_volume``: the predict command, on folders of images and on NIfTI or DICOM volumes.
- ``summary``: ``write_summary``, one table and chart over every active dataset (the compare stage).
"""
