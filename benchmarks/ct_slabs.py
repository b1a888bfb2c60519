"""Slab measurement on the one shared CT patient: the real pipeline with ``volume.slab_groups``, NOT patient-level.

The shared 3D-IRCADb patient (``../shared/datasets/ircadb-liver-ct``, 45
slices) is one group under the ``ircadb-liver-ct`` profile, so there is no
test set. This benchmark copies the repository (``real_data.copy_tree``),
makes that profile the only active one with its source pointed at the
shared patient, and runs ``dvc repro`` (``real_data.run_repro``) with:

- ``volume.slab_groups: 5``: each run of 5 contiguous slices is a group,
  so the split draws train, valid and test slabs from the one patient;
- ``split.audit.duplicates: off`` for this dataset: the leak audit rightly
  finds the slices on either side of a slab boundary near-duplicates
  (6 to 24 bits of 256 apart) and would merge every slab back into one
  group; that closeness is why this is not a patient-level result;
- the profile's own ``plan: {budget_minutes: 6}`` (one patient's 45 slices
  need less than the global 16 training minutes; the whole run then fits
  15 minutes on 2 cores); ``--budget-minutes`` overrides it.

It writes ``benchmarks/results/ct_slabs.md`` (and the numbers in
``ct_slabs.json``): liver and tumour Dice per slice and per volume (3D,
HD95 in mm), which slabs were tested, convert's slices per second, the wall
time of each stage and of the whole run, the CPU (``lscpu``).

    flock /tmp/exp/cpu.lock nice -n 19 python benchmarks/ct_slabs.py [--slab 5] [--budget-minutes M]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from ct_volumes import cpu_model
from real_data import SHARED, configure, copy_tree, run_repro

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATASET = "ircadb-liver-ct"
CLASSES = ("liver", "tumour")


def overrides(slab: int, budget_minutes: float | None) -> dict[str, object]:
    changes: dict[str, object] = {f"datasets.{DATASET}.convert.volume.slab_groups": slab,
                                  f"datasets.{DATASET}.split": {"audit": {"duplicates": "off"}}}
    if budget_minutes is not None:
        changes[f"datasets.{DATASET}.plan"] = {"budget_minutes": budget_minutes}
    return changes


def split_slabs(path: Path) -> dict[str, list[str]]:
    """The slab groups on each side of the split (originals only)."""
    sides: dict[str, set[str]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["kind"] == "original":
                sides.setdefault(row["split"], set()).add(row["group"].rsplit("_", 1)[-1])
    return {side: sorted(groups) for side, groups in sorted(sides.items())}


def measure(slab: int, budget_minutes: float | None, commit: str) -> dict:
    changes = overrides(slab, budget_minutes)
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / DATASET
        copy_tree(clone)
        configure(clone, DATASET, changes)
        total, stages, _ = run_repro(clone)
        out = clone / "metrics" / "datasets" / DATASET
        report = json.loads((clone / "data" / "converted" / DATASET / "report.json").read_text())
        return {"commit": commit, "date": f"{datetime.now():%Y-%m-%d}", "overrides": changes, "seconds": total,
                "stages": stages, "report": {k: report[k] for k in ("count", "groups", "slices", "groups_by")},
                "sides": split_slabs(clone / "data" / "split" / f"{DATASET}.csv"),
                "eval": json.loads((out / "eval.json").read_text()),
                "train": json.loads((out / "train.json").read_text()),
                "per_volume": (out / "per_volume.csv").read_text()}


def fmt(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    ci = "" if stat.get("ci_low") is None or stat.get("n", 0) < 2 else \
        f" [{stat['ci_low']:.{digits}f}, {stat['ci_high']:.{digits}f}]"
    return f"{stat['mean']:.{digits}f}{ci} (n={stat['n']})"


def markdown(r: dict) -> str:
    ev, vol = r["eval"], r["eval"].get("volumes", {})
    convert_s = r["stages"].get("convert")
    rate = f"{r['report']['count'] / convert_s:.1f}" if convert_s else "n/a"
    lines = [
        "# CT slabs: one patient split by slabs (a measurement, NOT a patient-level result)",
        "",
        f"{r['date']}, commit {r['commit']}, {platform.machine()} ({cpu_model()}, `lscpu`), {os.cpu_count()} cores, "
        "torch CPU, run with `nice -n 19` beside other work. Command: `flock /tmp/exp/cpu.lock nice -n 19 python "
        "benchmarks/ct_slabs.py`: `dvc repro` on a copy of the repository with only `ircadb-liver-ct` active and "
        f"the overrides `{json.dumps(r['overrides'])}`.",
        "",
        f"**Caveat.** {r['report']['groups_by'].get('caveat', '')}. The one shared 3D-IRCADb patient "
        f"({r['report']['count']} slices) is cut into {r['report']['groups']} slabs; test slabs "
        f"{', '.join(r['sides'].get('test', []))}, validation {', '.join(r['sides'].get('valid', []))}, training "
        f"{', '.join(r['sides'].get('train', []))}. A test slab's neighbours are in training, 1.6 mm away, and the "
        "leak audit, which would merge every slab back into one group, is off for this run. The numbers say the "
        "pipeline runs end to end on a CT volume and what it scores on slices it did not train on; they say "
        "nothing about a new patient. A patient-level protocol needs several volumes (k-fold over volumes, "
        "`split.folds`, README: CT volumes).",
        "",
        "| class | slice Dice [95% CI] (n: test slices with the class) | volume Dice | volume HD95 mm "
        "| volumes missed |",
        "|---|---|---|---|---|",
    ]
    for cls in CLASSES:
        lines.append(f"| {cls} | {fmt(ev['dice'].get(cls))} | "
                     f"{fmt(vol.get('dice', {}).get(cls))} | {fmt(vol.get('hd95_mm', {}).get(cls), 1)} | "
                     f"{vol.get('missed', {}).get(cls, 'n/a')} |")
    lines += [
        "",
        f"Per volume: {vol.get('n_volumes', 0)} volume, {vol.get('slices_scored', 0)} of its "
        f"{vol.get('slices_in_volumes', 0)} slices scored (the test slabs, stacked at their own z; the other "
        "slices are blank in prediction and truth). With one volume there is no interval.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| `dvc repro`, whole run | {r['seconds'] / 60:.1f} min (target <= 15) |",
        f"| convert | {r['report']['count']} slices in {convert_s:.1f} s of the stage: {rate} slices/s (stage wall "
        "time, with Python and DVC start-up) |" if convert_s else "| convert | n/a |",
        f"| training | {r['train']['train_seconds']:.0f} s, {r['train']['epochs_run']} epochs |",
        "| stage seconds | " + ", ".join(f"{k} {v:.0f}" for k, v in r["stages"].items()) + " |",
        "",
        "per_volume.csv:",
        "",
        "```",
        r["per_volume"].strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slab", type=int, default=5, help="slices per slab group")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="the profile's plan.budget_minutes instead of its own")
    args = parser.parse_args()
    if not (SHARED / DATASET).is_dir():
        sys.exit(f"{SHARED / DATASET} is absent: this benchmark needs the shared IRCADb patient")
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    result = measure(args.slab, args.budget_minutes, commit)
    (RESULTS / "ct_slabs.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (RESULTS / "ct_slabs.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
