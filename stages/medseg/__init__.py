"""Library shared by the pipeline stages in ``stages/``.

Each module has one job: ``config`` loads and validates ``params.yaml``,
``paths`` names every artifact, ``atomic`` writes outputs safely, ``imageio``
reads and writes images with strict checks, ``masks`` turns annotations into
label maps, ``synthetic`` generates the embedded default dataset,
``download``/``archive`` fetch and unpack remote data, ``augmentation`` and
``splitting`` implement the augment and split stages.
"""
