"""Raw datasets as their publishers ship them, read into the pipeline's converted format.

- ``discover``: find the samples of a layout (AUL, or images/masks folders, per class or not), groups and ids.
- ``samples``: ``Sample`` and ``Discovery``, what discovery returns; ``safe_id``.
- ``image_class``: image-level classes from class folders, a file-name regex or a metadata CSV.
- ``aul``: the AUL layout, its polygon JSON and its quirks.
- ``masks``: mask codecs (``rgb``, ``grey``, ``binary``, ``outline``, ``palette``) with snapping of lossy values.
- ``outline``: closed contours drawn as ink, filled per contour (holes, gaps).
- ``coco``, ``labelme``, ``cvat``: the files of annotation tools, read into drawn instances.
- ``instances``: drawn instances (polygons, boxes, circles, RLE) checked and filled into one label map.
- ``convert``: the convert stage's work, written through ``medseg.data.converted``.
"""
