"""Plumbing every stage uses: files in and out, and the stage entry point.

- ``errors``: ``DataError`` (names the file), ``StageError``, ``Terminated`` (SIGTERM).
- ``atomic``: outputs appear only when complete (``atomic_dir``, ``atomic_file``).
- ``images``: strict image and mask decoding, canonical PNG writing.
- ``tables``: the small JSON and CSV files stages hand to each other.
- ``paths``: every stage folder, matching the ``outs:`` of ``dvc.yaml``.
- ``parallel``: an ordered worker pool whose output does not depend on the worker count.
- ``cli``: ``run_stage``, the shared ``main`` of every stage script.
"""
