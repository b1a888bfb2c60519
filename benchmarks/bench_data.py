"""Benchmark the data stages on the real samples in ../shared/datasets.

Prints and saves (benchmarks/results/data.md) a table of images/s for
`convert` and `augment` with 1 and 2 worker processes, the speed-up of 2 over
1 measured in the same run, and CPU utilisation (CPU seconds of this process
and its workers / wall seconds / cores). Run from the repository root:

    python benchmarks/bench_data.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from medseg.augment.dataset import augment_dataset
from medseg.config import load_params
from medseg.data.converted import ConvertedDataset
from medseg.formats.convert import convert_dataset
from medseg.formats.discover import discover

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared" / "datasets"
DATASETS = ["us-liver-mini", "busi-malignant-mini", "chase-retina-mini"]


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn) -> tuple[float, float]:
    """Best wall time over the repeats, and the CPU utilisation of that run."""
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    return wall, (cpu_seconds() - cpu0) / wall / os.cpu_count()


def best(fn, repeat: int) -> tuple[float, float]:
    return min((timed(fn) for _ in range(repeat)), key=lambda r: r[0])


def run(repeat: int, datasets: list[tuple[str, Path]] | None = None) -> list[dict]:
    """Rows for each (params.yaml dataset name, raw folder); default: the shared real-data samples."""
    params = load_params(REPO / "params.yaml")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, raw in datasets or [(n, SHARED / n) for n in DATASETS]:
            cfg = params.dataset(name).convert
            n = len(discover(raw, cfg).samples)
            for workers in (1, 2):
                def convert(w=workers, name=name, raw=raw, cfg=cfg):
                    out = tmp / f"conv-{name}-{w}-{time.perf_counter_ns()}"
                    convert_dataset(raw, out, cfg, workers=w)
                wall, util = best(convert, repeat)
                rows.append({"stage": "convert", "dataset": name, "workers": workers, "images": n,
                             "seconds": wall, "images_per_s": n / wall, "cpu_util": util})
            converted = tmp / f"conv-{name}-final"
            convert_dataset(raw, converted, cfg, workers=2)
            sources = ConvertedDataset(converted)
            for workers in (1, 2):
                aug_cfg = params.augment.model_copy(update={"workers": workers})
                samples = len(sources.ids) * aug_cfg.copies

                def augment(c=aug_cfg, w=workers, name=name, sources=sources):
                    augment_dataset(sources, c, tmp / f"aug-{name}-{w}-{time.perf_counter_ns()}")
                wall, util = best(augment, repeat)
                rows.append({"stage": "augment", "dataset": name, "workers": workers, "images": samples,
                             "seconds": wall, "images_per_s": samples / wall, "cpu_util": util})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| stage | dataset | workers | images | seconds | images/s | speed-up vs 1 | CPU util |",
             "|---|---|---|---|---|---|---|---|"]
    base = {}
    for r in rows:
        key = (r["stage"], r["dataset"])
        base.setdefault(key, r["images_per_s"])
        lines.append(f"| {r['stage']} | {r['dataset']} | {r['workers']} | {r['images']} | {r['seconds']:.2f} | "
                     f"{r['images_per_s']:.1f} | {r['images_per_s'] / base[key]:.2f}x | {r['cpu_util']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this benchmark needs the shared real-data samples")
    text = table(run(args.repeat))
    print(text)
    header = (f"# Data stages benchmark\n\nMachine: {os.cpu_count()} cores. Command: "
              f"`python benchmarks/bench_data.py --repeat {args.repeat}`. Best of {args.repeat} runs; "
              "augment uses params.yaml `augment` (copies, size) with `workers` overridden. "
              "CPU util = CPU seconds (process + workers) / wall seconds / cores.\n\n")
    (REPO / "benchmarks" / "results" / "data.md").write_text(header + text + "\n")


if __name__ == "__main__":
    main()
