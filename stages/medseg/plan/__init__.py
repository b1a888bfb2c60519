"""The plan: a dataset's fingerprint, and every ``auto`` knob filled in from it (the plan stage's work).

- ``fingerprint``: image sizes, intensities, class shares, region sizes and widths.
- ``rules``: canvas, stem stride, patch, depth, batch, width, steps, class weights; each decision explained.
- ``make``: ``make_plan`` for one dataset; ``medseg.data.plans`` writes and reads the result.
"""
