"""Offline augmentation: seeded variants of every training image, image and mask moved alike.

- ``transforms``: the albumentations pipeline, the acoustic shadow, ``augment_sample`` and its seeds.
- ``dataset``: the augment stage's work (``augment_dataset``), in worker processes.
- ``preview``: the picture of sources and variants the stage writes beside its shards.
"""
