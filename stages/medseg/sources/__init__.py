"""The fetch stage's sources: where a dataset's raw files come from.

- ``fetch``: ``fetch_source`` fills ``data/raw/<name>`` from any source and returns its provenance record.
- ``synthetic``: the embedded default dataset, generated in the real AUL layout.
- ``download``: streamed, retried, checksum-verified downloads (``url`` and ``zenodo`` sources).
- ``archive``: zip, tar and 7z (split volumes too) extraction with guards against traversal, links and bombs.
"""
