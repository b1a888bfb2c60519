"""Raw datasets as their publishers ship them, read into the pipeline's converted format.

- ``discover``: find the samples of a layout (AUL, or images/masks folders, per class or not), groups and ids.
- ``samples``: ``Sample`` and ``Discovery``, what discovery returns; ``safe_id``.
- ``image_class``: image-level classes from class folders, a file-name regex or a metadata CSV.
- ``aul``: the AUL layout, its polygon JSON and its quirks.
- ``masks``: mask codecs (``rgb``, ``grey``, ``binary``, ``palette``) with snapping of lossy values.
- ``convert``: the convert stage's work, written through ``medseg.data.converted``.
"""
