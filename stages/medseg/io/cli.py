"""Shared entry point for stage scripts: arguments, logging, clean failures.

A stage script defines ``main(dataset: str, params: Params) -> None`` and
ends with ``run_stage(main)``. Expected failures (bad params, bad data,
failed downloads, a ``StageError`` such as a non-finite training loss or an
unreachable tracking server that ``mlflow.required`` asks for) print one
clear message and exit with status 1; anything else keeps its traceback.
SIGTERM (``kill``, a scheduler, ``dvc queue kill``) raises ``Terminated``
like Ctrl-C raises ``KeyboardInterrupt``, so the stage unwinds: temporary
outputs are deleted and an MLflow run is marked KILLED.
Exit status is then 143 (128 + SIGTERM).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError, load_params
from .errors import DataError, StageError, raise_terminated

log = logging.getLogger("medseg")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)


def run_stage(main: Callable[..., None], argv: list[str] | None = None, per_dataset: bool = True,
              options: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Parse arguments, load params, call ``main(dataset, params)`` (or ``main(params)``), report failures.

    ``options`` adds a command's own arguments to the parser; ``main`` then
    also gets the parsed arguments, last.
    """
    parser = argparse.ArgumentParser(description=(main.__doc__ or "").strip().splitlines()[0] if main.__doc__ else None)
    if per_dataset:
        parser.add_argument("dataset", help="dataset name from params.yaml")
    if options is not None:
        options(parser)
    parser.add_argument("--params", default="params.yaml", type=Path, help="parameters file")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    # Python's default for SIGTERM is to die without unwinding, which would
    # leave temporary siblings of the outputs behind.
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        params = load_params(args.params)
        extra = (args,) if options is not None else ()
        if per_dataset:
            params.dataset(args.dataset)
            main(args.dataset, params, *extra)
        else:
            main(params, *extra)
    except (ConfigError, DataError, StageError) as exc:
        log.error("%s", exc)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

