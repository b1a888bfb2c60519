"""CT volumes (NIfTI files and DICOM series) read, reoriented and sliced into the 2D converted format.

- ``volume``: ``Volume``, voxels on a RAS grid with the affine they came with; reorientation, grid checks.
- ``nifti``: ``read_nifti`` (``.nii``, ``.nii.gz``, through nibabel).
- ``dicom``: ``read_series``, one series folder (through pydicom): slices ordered by instance number,
  rescaled to HU, the affine built from the slices' geometry.
- ``layouts``: the volumes of a dataset (NIfTI pairs by volume id, 3D-IRCADb patient folders) and their labels.
- ``slicing``: HU window, in-plane resampling, which slices are kept, 2.5D stacks.
- ``convert``: the convert stage's work for the volume formats, written through ``medseg.data.converted``
  and ``medseg.data.volumes``.
"""
