"""DVC stage ``fetch``: bring a dataset's raw files into ``data/raw/<dataset>``.

Sources (params: ``datasets.<name>.source``): synthetic (the embedded default,
generated in AUL's layout), url / zenodo (verified download + safe
extraction), local (a folder or archive on disk). Writes the raw folder and a
provenance record next to it; both appear only once complete.

Usage (from the repository root): ``python stages/fetch.py <dataset>``
"""
import logging

from medseg.config import Params
from medseg.io import paths
from medseg.io.atomic import atomic_dir
from medseg.io.cli import run_stage
from medseg.io.tables import write_json
from medseg.sources.fetch import fetch_source

log = logging.getLogger("fetch")


def main(dataset: str, params: Params) -> None:
    """Fetch one dataset's raw data."""
    source = params.dataset(dataset).source
    with atomic_dir(paths.raw_dir(dataset)) as tmp:
        record = fetch_source(source, tmp, paths.download_cache(dataset))
    write_json(paths.provenance_file(dataset), {"dataset": dataset, **record})
    log.info("%s: %d files, %d bytes from %s source", dataset, record["files"], record["bytes"], source.kind)


if __name__ == "__main__":
    run_stage(main)
