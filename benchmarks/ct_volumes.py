"""Convert speed of CT volumes: the shared 3D-IRCADb patient through the ``ircadb-liver-ct`` profile.

Times ``medseg.volumes.convert.convert_volumes`` (read the DICOM series and
masks, reorient, window, write PNGs, manifest and volumes.json) as the
convert stage runs it, for the profile as it stands and for in-plane
resampling and 2.5D variants, and reading alone (``read_case``). Each is
the median of ``--repeats`` runs; the table goes to
``benchmarks/results/ct_volumes.md``.

    nice -n 19 python benchmarks/ct_volumes.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from medseg.config import load_params
from medseg.volumes.convert import convert_volumes
from medseg.volumes.layouts import find_cases, read_case

REPO = Path(__file__).resolve().parents[1]
RAW = REPO.parent / "shared" / "datasets" / "ircadb-liver-ct"
OUT = REPO / "benchmarks" / "results" / "ct_volumes.md"
VARIANTS = {
    "profile (2D, native 0.743 mm)": {},
    "resampled to 1.0 mm in-plane": {"volume": {"spacing": (1.0, 1.0)}},
    "2.5D (3 slices as channels)": {"channels": 3, "volume": {"slices_per_image": 3}},
}


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def variant(base, change: dict):
    volume = base.volume.model_copy(update=change.get("volume", {}))
    return base.model_copy(update={**change, "volume": volume})


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = load_params(REPO / "params.yaml").dataset("ircadb-liver-ct").convert
    case = find_cases(RAW, base.annotation).cases[0]
    rows = [("reading alone (image + 3 mask series)", median_seconds(lambda: read_case(case, base), args.repeats),
             45)]
    for name, change in VARIANTS.items():
        cfg = variant(base, change)
        with tempfile.TemporaryDirectory() as tmp:
            def run(cfg=cfg, tmp=Path(tmp)) -> None:
                shutil.rmtree(tmp / "out", ignore_errors=True)
                convert_volumes(RAW, tmp / "out", cfg, workers=1)
            seconds = median_seconds(run, args.repeats)
            slices = sum(1 for _ in (Path(tmp) / "out" / "images").iterdir())
        rows.append((name, seconds, slices))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lines = [
        "# CT volumes: convert speed",
        "",
        f"One 3D-IRCADb patient (`../shared/datasets/ircadb-liver-ct`: 45 DICOM slices of 512 x 512, three mask "
        f"series) through the `ircadb-liver-ct` profile, one worker (a volume is one job). Median of "
        f"{args.repeats} runs, {datetime.now():%Y-%m-%d}, commit {commit}, {platform.machine()} ({cpu_model()}, "
        f"`lscpu`), {os.cpu_count()} cores, run with `nice -n 19` beside other work. Command: "
        f"`nice -n 19 python benchmarks/ct_volumes.py --repeats {args.repeats}`.",
        "",
        "| what | seconds | slices | slices/s |",
        "|---|---|---|---|",
        *(f"| {name} | {seconds:.2f} | {slices} | {slices / seconds:.1f} |" for name, seconds, slices in rows),
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
