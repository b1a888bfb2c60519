"""Semi-supervised benchmark: does training on the unlabelled scans beat training on the labelled part alone?

The issue's protocol, on one dataset (default ``ddti-thyroid``, its profile's
protocol: 5-fold group cross-validation): with ``split.labelled_fraction`` f
(default 10% and 25% of the train patient groups), for each seed of the
labelled draw (``split.labelled_seed``; the test groups stay the same),

- ``supervised``: the labelled part alone (``train.semi_supervised.method: off``),
- one arm per method (``--methods``): the labelled part plus the others as
  unlabelled images,

and once ``full``: every train mask (``labelled_fraction: 1``). Every run
is the real pipeline (``dvc repro``) in one copy of the repository
(``benchmarks/real_data.py``'s ``copy_tree``), so fetch, convert and
augment run once and each run re-plans, splits, trains and evaluates. The
plan does not depend on the arm, so every arm takes the same steps; the
semi-supervised arms do more work per step, which the table shows as
training seconds per epoch against ``supervised`` at the same fraction and seed.

Scores: the dataset's class (``real_data.DATASETS``; ``mass`` for the
synthetic data) Dice per test image at native resolution, every image tested
once by the round that held it out. Per arm and fraction: the mean over
images of each image's Dice averaged over the seeds, with a 95% bootstrap
interval over images, and the paired difference to ``supervised`` (per image
and seed) with its interval. Each run's numbers go to
``benchmarks/results/semi_supervised/<dataset>/<arm>_f<fraction>_s<seed>.json``
as soon as it ends; the table ``benchmarks/results/semi_supervised.md`` is
then rebuilt from every run stored for the dataset.

    python benchmarks/semi_supervised.py [--dataset ddti-thyroid] [--fractions 0.1,0.25] [--seeds 3]
        [--methods fixmatch,unimatch,mean_teacher] [--arms supervised,semi,full] [--set train.epochs=2 ...]

A short check: ``--fractions 0.1 --seeds 1 --methods fixmatch``. The whole
protocol is many hours on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_data  # noqa: E402

from medseg.evaluate.metrics import summarise  # noqa: E402

STORE = real_data.RESULTS / "semi_supervised"
# Each method's knobs over params.yaml's train.semi_supervised (``--set`` may change the shared ones).
METHODS = {"fixmatch": {"method": "fixmatch"},
           "unimatch": {"method": "fixmatch", "feature_dropout": 0.5},
           "mean_teacher": {"method": "mean_teacher"}}
ARMS = ("supervised", "semi", "full")
BOOTSTRAP, BOOT_SEED = 1000, 0


# --------------------------------------------------------------------------- one run
def settings(arm: str, fraction: float, seed: int) -> dict[str, object]:
    """The params of one run: which masks train, and the method."""
    if arm == "full":
        return {"split.labelled_fraction": 1.0, "train.semi_supervised.method": "off"}
    semi = {"method": "off"} if arm == "supervised" else METHODS[arm]
    return {"split.labelled_fraction": fraction, "split.labelled_seed": seed,
            **{f"train.semi_supervised.{k}": v for k, v in semi.items()}}


def apply(clone: Path, base: dict[str, object], run: dict[str, object]) -> None:
    """params.yaml of the copy: the benchmark's overrides, then this run's (a method's knobs reset first)."""
    path = clone / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["train"]["semi_supervised"].update(method="off", feature_dropout=0.0)
    for key, value in {**base, **run}.items():
        real_data.set_key(params, key, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def repro(clone: Path) -> tuple[float, dict[str, float]]:
    """Commit the copy (the run keys need a commit) and run ``dvc repro``; wall seconds, in all and per stage."""
    for args in (["git", "add", "-A"], ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit",
                                        "-qm", "run", "--allow-empty"]):
        subprocess.run(args, cwd=clone, check=True, capture_output=True)
    seconds, stages, _ = real_data.timed_repro(clone)
    return seconds, stages


def score_class(dataset: str) -> str:
    return real_data.DATASETS.get(dataset, {}).get("score") or "mass"


def measure(clone: Path, dataset: str, arm: str, fraction: float, seed: int, base: dict[str, object],
            commit: str) -> dict:
    run = settings(arm, fraction, seed)
    apply(clone, base, run)
    seconds, stages = repro(clone)
    out = clone / "metrics" / "datasets" / dataset
    per_image = pd.read_csv(out / "per_image.csv")
    scored = per_image[per_image["class"] == score_class(dataset)]
    history = pd.read_csv(out / "train_history.csv")
    train = json.loads((out / "train.json").read_text())
    rounds = [v for k, v in train.items() if k.startswith("fold") and isinstance(v, dict)] or [train]  # not "folds"
    return {"dataset": dataset, "arm": arm, "fraction": run["split.labelled_fraction"], "seed": seed if arm != "full"
            else None, "commit": commit, "date": f"{datetime.now():%Y-%m-%d}", "overrides": base, "run": run,
            "seconds": seconds, "stages": stages, "train": train,
            "eval": json.loads((out / "eval.json").read_text())["dice"][score_class(dataset)],
            "epoch_seconds": float(history["seconds"].mean()), "epochs": int(len(history)),
            "n_labelled": [r["n_train"] for r in rounds], "n_unlabelled": [r["n_unlabelled"] for r in rounds],
            "per_image": dict(zip(scored["id"].astype(str), scored["dice"].astype(float), strict=True))}


# --------------------------------------------------------------------------- the table
def per_image_mean(runs: list[dict]) -> pd.Series:
    """Each test image's Dice averaged over the runs (seeds) that scored it."""
    return pd.DataFrame([r["per_image"] for r in runs]).mean(axis=0, skipna=True)


def paired_difference(runs: list[dict], baseline: dict[tuple, dict]) -> pd.Series | None:
    """Per image, the mean over seeds of (this arm's Dice - supervised's at the same fraction and seed)."""
    diffs = [pd.Series(r["per_image"]) - pd.Series(baseline[(r["fraction"], r["seed"])]["per_image"])
             for r in runs if (r["fraction"], r["seed"]) in baseline]
    return pd.DataFrame(diffs).mean(axis=0, skipna=True) if diffs else None


def ci(values: pd.Series, signed: bool = False) -> str:
    stat = summarise(values.to_numpy(), BOOTSTRAP, BOOT_SEED)
    if stat["n"] == 0:
        return "n/a"
    sign = "+" if signed else ""
    return f"**{stat['mean']:{sign}.3f}** [{stat['ci_low']:{sign}.3f}, {stat['ci_high']:{sign}.3f}]"


def report(dataset: str, results: list[dict]) -> str:
    score = score_class(dataset)
    baseline = {(r["fraction"], r["seed"]): r for r in results if r["arm"] == "supervised"}
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["fraction"], r["arm"]), []).append(r)
    order = {arm: i for i, arm in enumerate(["supervised", *METHODS, "full"])}
    runs = sorted({(r["date"], r["commit"], json.dumps(r["overrides"])) for r in results})
    lines = [f"# Semi-supervised training: {dataset}\n",
             f"{platform.machine()} ({real_data.cpu_model()}), {os.cpu_count()} cores, torch CPU. Command: "
             "`python benchmarks/semi_supervised.py` (its docstring gives the protocol). Measured: "
             + "; ".join(f"{date} at commit {commit}" + (f" with overrides {ov}" if ov != "{}" else "")
                         for date, commit, ov in runs) + ".\n",
             f"{score} Dice per test image, every image tested once (the dataset profile's protocol), averaged over "
             "the seeds of the labelled draw; 95% bootstrap intervals over images. \"vs supervised\": the paired "
             "difference per image and seed to the labelled part alone. Times: mean training seconds per epoch "
             "(validation excluded), against supervised at the same fraction and seed; rows run beside other work "
             "are not comparable.\n",
             f"| labelled | arm | seeds | labelled / unlabelled images (first round) | {score} Dice [95% CI] | "
             "vs supervised [95% CI] | s / epoch | x supervised |",
             "|---|---|---|---|---|---|---|---|"]
    for (fraction, arm), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
        diff = paired_difference(rs, baseline) if arm not in ("supervised", "full") else None
        ratios = [r["epoch_seconds"] / baseline[(r["fraction"], r["seed"])]["epoch_seconds"] for r in rs
                  if (r["fraction"], r["seed"]) in baseline]
        seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"] or 0)) if arm != "full" else "-"
        lines.append(f"| {fraction:.0%} | {arm} | {seeds} | {rs[0]['n_labelled'][0]} / {rs[0]['n_unlabelled'][0]} | "
                     f"{ci(per_image_mean(rs))} | {'-' if diff is None else ci(diff, signed=True)} | "
                     f"{np.mean([r['epoch_seconds'] for r in rs]):.1f} | "
                     f"{f'{np.mean(ratios):.2f}' if ratios and arm != 'supervised' else '-'} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main
def planned_runs(arms: list[str], fractions: list[float], seeds: int, methods: list[str]) -> list[tuple]:
    """(arm, fraction, seed) in the order they run: fully supervised once, then per fraction and seed the
    labelled part alone before each method (the times compare with it)."""
    out = [("full", 1.0, 0)] if "full" in arms else []
    for fraction in fractions:
        for seed in range(1, seeds + 1):
            out += [("supervised", fraction, seed)] if "supervised" in arms else []
            out += [(m, fraction, seed) for m in methods] if "semi" in arms else []
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ddti-thyroid")
    parser.add_argument("--fractions", default="0.1,0.25", help="labelled shares of the train patient groups")
    parser.add_argument("--seeds", type=int, default=3, help="labelled draws: split.labelled_seed 1..N")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"of {', '.join(METHODS)}")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"of {', '.join(ARMS)}")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML", help="params overrides for every run")
    parser.add_argument("--out", default=None, help="the table (default benchmarks/results/semi_supervised.md, or "
                                                    "semi_supervised_<dataset>.md for another dataset)")
    parser.add_argument("--store", default=str(STORE), help="one JSON per run, under <store>/<dataset>/")
    args = parser.parse_args()
    methods, arms = args.methods.split(","), args.arms.split(",")
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(arms) - set(ARMS))
    if unknown:
        sys.exit(f"unknown methods or arms {unknown}; methods are {list(METHODS)}, arms {list(ARMS)}")
    base = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=real_data.REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    store = Path(args.store) / args.dataset
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / args.dataset
        real_data.copy_tree(clone)
        real_data.configure(clone, args.dataset, {})
        subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
        for arm, fraction, seed in planned_runs(arms, [float(f) for f in args.fractions.split(",")], args.seeds,
                                                methods):
            print(f"{args.dataset}: {arm}, labelled {fraction:g}, seed {seed} ...", flush=True)
            r = measure(clone, args.dataset, arm, fraction, seed, base, commit)
            name = "full" if arm == "full" else f"{arm}_f{fraction:g}_s{seed}"
            (store / f"{name}.json").write_text(json.dumps(r, indent=1) + "\n")
            print(json.dumps({k: r[k] for k in ("arm", "fraction", "seed", "epoch_seconds", "n_labelled",
                                                "n_unlabelled")} | {"dice": r["eval"]["mean"]}), flush=True)
    text = report(args.dataset, [json.loads(p.read_text()) for p in sorted(store.glob("*.json"))])
    print(text)
    default = "semi_supervised.md" if args.dataset == "ddti-thyroid" else f"semi_supervised_{args.dataset}.md"
    Path(args.out or real_data.RESULTS / default).write_text(text)


if __name__ == "__main__":
    main()
