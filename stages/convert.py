"""DVC stage ``convert``: raw annotations -> canonical images and label maps.

Reads ``data/raw/<dataset>``, writes ``data/converted/<dataset>/`` with
``images/``, ``labels/`` (uint8 class indices), ``manifest.csv`` and
``report.json`` (``medseg.data.converted``). The annotation format,
classes, pairing and group rules come from ``datasets.<name>.convert``;
the volume formats (CT as NIfTI or DICOM, ``medseg.volumes``) are sliced
into the same format, plus ``volumes.json``.

Usage (from the repository root): ``python stages/convert.py <dataset>``
"""
import logging

from medseg.config import Params
from medseg.formats.convert import convert_dataset
from medseg.io import paths
from medseg.io.atomic import atomic_dir
from medseg.io.cli import run_stage
from medseg.volumes.convert import convert_volumes

log = logging.getLogger("convert")


def main(dataset: str, params: Params) -> None:
    """Convert one dataset's masks (or volumes) into images and label maps."""
    cfg = params.dataset(dataset).convert
    convert = convert_volumes if cfg.is_volume else convert_dataset
    with atomic_dir(paths.converted_dir(dataset)) as out:
        report = convert(paths.raw_dir(dataset), out, cfg)
    log.info("%s: %d images, %d groups, classes %s, %d skipped, %d pixels snapped",
             dataset, report["count"], report["groups"], report["image_classes"],
             len(report["skipped"]), report["snapped_pixels"])


if __name__ == "__main__":
    run_stage(main)
