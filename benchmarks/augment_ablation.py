"""What online and offline augmentation each contribute: the default pipeline with one of them switched off.

Runs the real pipeline (``benchmarks/real_data.py``'s ``measure``: a fresh
copy of the repository, ``dvc repro``) on one dataset three ways: as shipped,
without online augmentation (``train.online.p=0``), and without the augment
stage's offline copies (``augment.copies=0``; training then sees the
originals, transformed online). The plan is the same in all three (it does
not depend on either knob), so the number of steps is too. The as-shipped
row is read from ``benchmarks/results/real_data/<dataset>.json`` when that
file exists (the table names the commit of every row), else it is run. Writes
``benchmarks/results/augment_ablation.md``.

    python benchmarks/augment_ablation.py [--dataset us-liver-mini]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_data  # noqa: E402

VARIANTS = {"as shipped": {}, "no online augmentation": {"train.online.p": 0.0},
            "no offline copies": {"augment.copies": 0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="us-liver-mini")
    parser.add_argument("--out", default=str(real_data.RESULTS / "augment_ablation.md"))
    args = parser.parse_args()
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=real_data.REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    score = real_data.DATASETS[args.dataset]["score"]
    stored = real_data.RESULTS / "real_data" / f"{args.dataset}.json"
    rows = []
    for name, overrides in VARIANTS.items():
        if not overrides and stored.is_file():
            result = json.loads(stored.read_text())
        else:
            print(f"{args.dataset}: {name} ...", flush=True)
            result = real_data.measure(args.dataset, overrides, None, commit)
        stat = result["eval"]["dice"][score]
        rows.append(f"| {name} | `{overrides or '-'}` | {real_data.fmt(stat)} | "
                    f"{result['train']['train_seconds']:.0f} s | {result['commit']} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        f"# Augmentation ablation: {args.dataset}\n",
        f"{real_data.cpu_model()}. Command: `python benchmarks/augment_ablation.py --dataset "
        f"{args.dataset}`. The protocol of the dataset's profile; {score} Dice per image, pooled over the held-out "
        "images, with its 95% bootstrap interval. Training times of rows run beside other work are not "
        "comparable.\n",
        f"| variant | overrides | {score} Dice [95% CI] | training | commit |", "|---|---|---|---|---|",
        *rows]) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
