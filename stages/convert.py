"""DVC stage `convert`: raw annotations -> canonical images and label maps.

Reads data/raw/<dataset>, writes data/converted/<dataset>/ with images/,
labels/ (uint8 class indices), manifest.csv and report.json. The annotation
format, classes, pairing and group rules come from params.yaml.
"""
import logging

from medseg import paths
from medseg.atomic import atomic_dir
from medseg.cli import run_stage
from medseg.config import Params
from medseg.conversion import convert_dataset

log = logging.getLogger("convert")


def main(dataset: str, params: Params) -> None:
    """Convert one dataset's masks into label maps."""
    cfg = params.dataset(dataset).convert
    with atomic_dir(paths.converted_dir(dataset)) as out:
        report = convert_dataset(paths.raw_dir(dataset), out, cfg)
    log.info("%s: %d images, %d groups, classes %s, %d skipped, %d pixels snapped",
             dataset, report["count"], report["groups"], report["image_classes"],
             len(report["skipped"]), report["snapped_pixels"])


if __name__ == "__main__":
    run_stage(main)
