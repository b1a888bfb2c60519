"""The library behind the stage scripts in ``stages/``: one subpackage per concern.

- ``io``: errors, atomic writes, image files, small tables, stage folders, worker pools, the stage CLI.
- ``config``: ``params.yaml``, one schema with one set of defaults.
- ``sources``: fetch: the synthetic dataset, verified downloads, safe archive extraction.
- ``formats``: raw datasets as published (layouts, groups, mask codecs, AUL polygons) -> converted.
- ``data``: the formats stages hand each other, the split and its rounds, the model-input contract.
- ``augment``: seeded offline augmentation and its preview.
- ``model``: networks, the factory, checkpoints, the loss, runtime, inference.
- ``train``: training sets, the loop, several processes, the train stage's work.
- ``evaluate``: metrics, scoring, the evaluate and compare stages' work, predict.
- ``figures``: overlays, captions and grids.
- ``tracking``: MLflow: where runs go, one run per result, what a run holds.

docs/ARCHITECTURE.md maps every concept to its module and every on-disk
format to the module that owns it.
"""
