"""DVC stage ``convert``: raw annotations -> canonical images and label maps.

Reads ``data/raw/<dataset>``, writes ``data/converted/<dataset>/`` with
``images/``, ``labels/`` (uint8 class indices), ``manifest.csv`` and
``report.json`` (``medseg.data.converted``). The annotation format,
classes, pairing and group rules come from ``datasets.<name>.convert``.

Usage (from the repository root): ``python stages/convert.py <dataset>``
"""
import logging

from medseg.config import Params
from medseg.formats.convert import convert_dataset
from medseg.io import paths
from medseg.io.atomic import atomic_dir
from medseg.io.cli import run_stage

log = logging.getLogger("convert")


def main(dataset: str, params: Params) -> None:
    """Convert one dataset's masks into label maps."""
    with atomic_dir(paths.converted_dir(dataset)) as out:
        report = convert_dataset(paths.raw_dir(dataset), out, params.dataset(dataset).convert)
    log.info("%s: %d images, %d groups, classes %s, %d skipped, %d pixels snapped",
             dataset, report["count"], report["groups"], report["image_classes"],
             len(report["skipped"]), report["snapped_pixels"])


if __name__ == "__main__":
    run_stage(main)
