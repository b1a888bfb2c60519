"""Library shared by the pipeline stages in ``stages/``; each module has one job.

Configuration and plumbing: ``config`` (load and validate ``params.yaml``),
``paths`` (every artifact path), ``atomic`` (outputs appear only when
complete), ``errors`` (``DataError`` naming the file), ``cli`` (stage entry
point), ``tables`` (stage hand-off files), ``parallel`` (ordered worker pool).

Data: ``synthetic`` (the embedded default dataset), ``download`` and
``archive`` (verified downloads, safe extraction), ``fetching`` (the fetch
sources), ``imageio`` (strict image reading), ``masks`` (annotation codecs),
``discover`` (pairing and groups), ``conversion``, ``augmentation``,
``splitting``.

Model: ``dataset`` (in-memory training sets), ``model`` (U-Net blocks and
MONAI networks), ``losses``, ``training`` (the loop), ``checkpoint``,
``metrics``, ``evaluation``, ``visualize`` (overlays and grids), ``tracking``
(MLflow).
"""
