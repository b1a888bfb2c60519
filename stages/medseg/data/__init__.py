"""The pipeline's own files between stages, and the model-input contract.

One module per format, writer and reader together:

- ``converted``: ``data/converted/<name>/`` (convert writes; augment, split, train, evaluate read).
- ``volumes``: ``volumes.json`` in a converted dataset sliced from CT volumes (the volumes' geometry).
- ``shards``: ``data/augmented/<name>/`` (augment writes; split and train read).
- ``split``: the group-aware split and ``data/split/<name>.csv``.
- ``rounds``: ``Round``, the fixed split or one cross-validation round.
- ``results``: ``models/<name>/`` and ``metrics/datasets/<name>/`` (train and evaluate write;
  compare and track read).
- ``preprocess``: resize and scale, the one path from an image to the network's input.
"""
