"""The peer nnU-Net v2 (2D, defaults) on our cross-validation folds, our metric and our training time.

Protocol, per dataset (``split.folds: k``, e.g. 5):

1. Our folds: the repository is copied to a temporary folder and
   ``dvc repro split@<dataset>`` runs there, as in ``benchmarks/real_data.py``;
   the converted images, label maps and ``data/split/<dataset>.csv`` are read
   with our readers. Only source images go to nnU-Net (it augments on its own).
2. One nnU-Net raw dataset (2D PNGs, ``imagesTr/case_NNNN_0000.png``,
   ``labelsTr/case_NNNN.png`` with labels 0..C-1) is planned and preprocessed
   (``nnUNetv2_plan_and_preprocess -c 2d --verify_dataset_integrity``), and
   ``splits_final.json`` makes nnU-Net's fold r train on our round r's train
   images and validate on its valid images; round r's test fold is in no
   split of fold r.
3. ``nnUNetv2_train <id> 2d r -device cpu -tr nnUNetTrainerBudget``: nnU-Net's
   default trainer except for a wall-clock budget per round (by default the
   ``train_seconds`` our pipeline took in that round, from
   ``benchmarks/results/real_data/<dataset>.json``). The subclass (``TRAINER``
   below, written into the venv's ``nnunetv2/training/nnUNetTrainer/``, where
   nnU-Net looks trainers up by name) starts the clock when the first epoch
   starts, checks it after every training iteration (and validation step) and,
   once it is spent, ends the epoch with one validation step (nnU-Net's logs
   need one) and saves ``checkpoint_final.pth`` as usual. Epochs are 25 iterations (validation 5, nnU-Net's 250:50), and the
   poly learning rate decays over the budget instead of over 1000 epochs:
   stopping at epoch 3 of a 1000-epoch schedule would leave the rate at its
   peak, and our pipeline also anneals over its budget. nnU-Net's validation
   run after training is skipped (its result is not used). Torch uses 2
   threads; ``nnUNet_n_proc_DA`` (``--da-workers``) sets the augmentation workers.
4. ``nnUNetv2_predict -device cpu -chk checkpoint_final.pth`` (default mirroring
   TTA) on round r's test images; each prediction is scored against its label
   map by ``medseg.evaluate.scoring`` (``score_image`` with the plan's
   ``evaluate.combine`` groups, then ``aggregate``), pooled over all held-out
   images of the rounds run, exactly as our evaluate stage makes ``eval.json``:
   a class absent from an image's truth does not enter that class's Dice.

Writes ``benchmarks/results/nnunet_peer/<dataset>.json`` and rebuilds
``benchmarks/results/nnunet_peer.md`` (nnU-Net next to our
``benchmarks/results/real_data/<dataset>.json``) from every file there.
Run at normal priority on an otherwise idle machine: the budget is wall-clock.

    python benchmarks/nnunet_peer.py [--datasets us-liver-mini] [--rounds 0,1] [--budget-seconds 145]

Install nnU-Net in its own venv (torch first, pinned to the CPU wheel; nnunetv2
without its dependency chain ``dynamic-network-architectures -> timm ->
torchvision``, which would replace torch by a CUDA build and is only needed
for the Primus/EVA networks, not the default U-Net):

    $ python3 -m venv /work/nnunet/.venv
    $ /work/nnunet/.venv/bin/pip install torch==2.13.0
    $ /work/nnunet/.venv/bin/pip install --no-deps nnunetv2==2.8.1 dynamic-network-architectures==0.4.4
    $ /work/nnunet/.venv/bin/pip install torch==2.13.0 'acvl-utils>=0.2.6,<0.3' 'batchgenerators>=0.25.1' 'batchgeneratorsv2>=0.3.2' 'blosc2>=3.3.2' einops graphviz imagecodecs matplotlib nibabel numpy pandas requests scikit-image scikit-learn scipy seaborn SimpleITK tifffile tqdm yacs
"""  # noqa: E501
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from medseg.data.converted import ConvertedDataset
from medseg.data.plans import Plan, read_plan
from medseg.data.rounds import Round
from medseg.data.split import read_split
from medseg.evaluate.scoring import aggregate, cross_validation, score_image, without_nan
from medseg.io import paths
from medseg.io.images import read_png

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_data  # noqa: E402

RESULTS = real_data.RESULTS / "nnunet_peer"
TRAINER_NAME = "nnUNetTrainerBudget"
INSTALL = [line.strip()[2:] for line in __doc__.splitlines() if line.strip().startswith("$ ")]
START = time.perf_counter()
TRAINER = '''"""nnUNetTrainer with a wall-clock budget; written by medseg's benchmarks/nnunet_peer.py (edit there)."""
import json
import os
import time

import torch
from batchgenerators.utilities.file_and_folder_operations import join, save_json

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class BudgetPoly:
    """nnU-Net's poly schedule (exponent 0.9) with progress counted in seconds of the budget, not epochs."""

    def __init__(self, trainer):
        self.trainer = trainer

    def step(self, epoch=None):
        t = self.trainer
        lr = t.initial_lr * (1 - min(t.elapsed() / t.budget, 1.0)) ** 0.9
        for group in t.optimizer.param_groups:
            group["lr"] = lr


class nnUNetTrainerBudget(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget = float(os.environ["MEDSEG_BUDGET_SECONDS"])
        self.num_iterations_per_epoch = int(os.environ["MEDSEG_ITERATIONS"])
        self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)
        self.start, self.iterations, self.iteration_seconds, self.iteration_cpu_seconds = None, 0, 0.0, 0.0
        torch.set_num_threads(int(os.environ["MEDSEG_THREADS"]))

    def elapsed(self):
        return 0.0 if self.start is None else time.perf_counter() - self.start

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        return optimizer, BudgetPoly(self)

    def train_step(self, batch):
        self.lr_scheduler.step()
        return super().train_step(batch)

    def run_training(self):
        self.on_train_start()
        self.start = time.perf_counter()
        while self.current_epoch < self.num_epochs and self.elapsed() < self.budget:
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            while len(outputs) < self.num_iterations_per_epoch and self.elapsed() < self.budget:
                tick, cpu = time.perf_counter(), time.process_time()
                outputs.append(self.train_step(next(self.dataloader_train)))
                self.iterations += 1
                self.iteration_seconds += time.perf_counter() - tick
                self.iteration_cpu_seconds += time.process_time() - cpu
            self.on_train_epoch_end(outputs)
            with torch.no_grad():  # one validation step at least (the logs need it), more while time is left
                self.on_validation_epoch_start()
                val = [self.validation_step(next(self.dataloader_val))]
                while len(val) < self.num_val_iterations_per_epoch and self.elapsed() < self.budget:
                    val.append(self.validation_step(next(self.dataloader_val)))
                self.on_validation_epoch_end(val)
            self.on_epoch_end()
        trained = self.elapsed()
        self.on_train_end()
        save_json({"budget_seconds": self.budget, "trained_seconds": trained, "epochs": self.current_epoch,
                   "iterations": self.iterations, "iterations_per_epoch": self.num_iterations_per_epoch,
                   "seconds_per_iteration": self.iteration_seconds / max(self.iterations, 1),
                   "cpu_seconds_per_iteration": self.iteration_cpu_seconds / max(self.iterations, 1),
                   "threads": torch.get_num_threads()}, join(self.output_folder, "budget.json"))

    def perform_actual_validation(self, save_probabilities=False):
        self.print_to_log_file("validation skipped: the benchmark predicts the test fold itself")
'''


def say(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f} s] {message}", flush=True)


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, float]:
    """Run ``cmd`` with its output in ``log``; exit with the log's tail if it fails; return its wall and CPU seconds.

    CPU seconds count every core and the augmentation workers: on a busy machine they tell how much CPU the
    command actually got, on an idle one wall ~ CPU / cores.
    """
    start, cpu = time.perf_counter(), cpu_of_children()
    with log.open("w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode
    if code:
        sys.exit(f"{' '.join(cmd)} failed (exit {code}); last lines of {log}:\n"
                 + "".join(log.read_text().splitlines(keepends=True)[-40:]))
    return {"seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(cpu_of_children() - cpu, 1)}


def our_folds(clone: Path, dataset: str, logs: Path) -> dict[str, float]:
    """Copy the repository to ``clone`` and make our converted data and split there with our dvc."""
    real_data.copy_tree(clone)
    real_data.configure(clone, dataset, {})
    real_data.init_repo(clone)
    return run(["dvc", "repro", f"split@{dataset}"], logs / "dvc_repro.log", real_data.repro_env(), clone)


def export(converted: ConvertedDataset, split: pd.DataFrame, folds: int,
           raw: Path) -> tuple[dict[str, str], list[dict[str, list[str]]]]:
    """Write nnU-Net's raw dataset (every source image); return case names by id and the folds' splits."""
    cases = {sid: f"case_{i:04d}" for i, sid in enumerate(converted.ids)}
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for sid, case in cases.items():
        sample = converted.sample(sid)
        shutil.copyfile(sample.image, raw / "imagesTr" / f"{case}_0000.png")
        shutil.copyfile(sample.label, raw / "labelsTr" / f"{case}.png")
    channels = {"0": "grey"} if converted.channels == 1 else {"0": "R", "1": "G", "2": "B"}
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": channels, "labels": {name: i for i, name in enumerate(converted.classes)},
        "numTraining": len(cases), "file_ending": ".png"}, indent=1))
    splits = []
    for r in range(folds):
        rows = Round(r).select(split)
        train = rows["train"][rows["train"]["kind"] == "original"]
        splits.append({"train": sorted(cases[s] for s in train["id"]),
                       "val": sorted(cases[s] for s in rows["valid"]["id"])})
    return cases, splits


def install_trainer(venv: Path) -> None:
    found = sorted(venv.glob("lib/python*/site-packages/nnunetv2/training/nnUNetTrainer"))
    if not found:
        sys.exit(f"{venv} has no nnunetv2 package; install it:\n  " + "\n  ".join(INSTALL))
    (found[0] / f"{TRAINER_NAME}.py").write_text(TRAINER)


def versions(venv: Path) -> dict[str, str]:
    code = "from importlib.metadata import version as v; print(v('nnunetv2'), v('torch'))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    nnunet, torch = out.stdout.split()
    return {"nnunetv2": nnunet, "torch": torch}


def budgets(dataset: str, folds: int, override: float | None) -> dict[int, float]:
    if override is not None:
        return dict.fromkeys(range(folds), override)
    path = real_data.RESULTS / "real_data" / f"{dataset}.json"
    if not path.is_file():
        sys.exit(f"{path} is absent: run benchmarks/real_data.py --datasets {dataset} first, or give --budget-seconds")
    train = json.loads(path.read_text())["train"]
    return {r: float(train[f"fold{r}"]["train_seconds"]) for r in range(folds)}


@dataclass
class Peer:
    """One dataset made ready for nnU-Net: our data and folds, nnU-Net's dataset and the environment it runs in."""

    dataset: str
    converted: ConvertedDataset
    split: pd.DataFrame
    plan: Plan
    cases: dict[str, str]  # nnU-Net case name by our id
    splits: list[dict[str, list[str]]]
    ident: int
    name: str
    work: Path
    env: dict[str, str]


def prepare(dataset: str, work: Path, venv: Path, args: argparse.Namespace) -> tuple[Peer, dict]:
    """Our folds, nnU-Net's raw dataset, its 2D plan and preprocessed data, the fold splits; and what it took."""
    (work / "logs").mkdir(parents=True)
    clone = work / "repo"
    say(f"{dataset}: our folds (dvc repro split@{dataset} in {clone})")
    repro = our_folds(clone, dataset, work / "logs")
    converted = ConvertedDataset(clone / paths.converted_dir(dataset))
    split = read_split(clone / paths.split_file(dataset))
    plan = read_plan(dataset, path=clone / paths.plan_file(dataset))
    if plan.split.folds < 3:
        sys.exit(f"{dataset}: split.folds is {plan.split.folds}; this benchmark needs cross-validation folds")
    ident = 900 + list(real_data.DATASETS).index(dataset) if dataset in real_data.DATASETS else 999
    name = f"Dataset{ident:03d}_{re.sub('[^A-Za-z0-9]', '', dataset)}"
    env = dict(os.environ, nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(work / "nnUNet_results"), nnUNet_n_proc_DA=str(args.da_workers),
               MEDSEG_ITERATIONS=str(args.iterations), MEDSEG_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cases, splits = export(converted, split, plan.split.folds, work / "nnUNet_raw" / name)
    say(f"{dataset}: {len(cases)} images exported as {name}; planning and preprocessing (2d)")
    prep = run(["nnUNetv2_plan_and_preprocess", "-d", str(ident), "-c", "2d", "--verify_dataset_integrity",
                "-np", "2", "-npfp", "2"], work / "logs" / "plan_and_preprocess.log", env)
    preprocessed = work / "nnUNet_preprocessed" / name
    (preprocessed / "splits_final.json").write_text(json.dumps(splits, indent=1))
    nn_plan = json.loads((preprocessed / "nnUNetPlans.json").read_text())["configurations"]["2d"]
    say(f"{dataset}: preprocessed in {prep['seconds']:.0f} s; 2d patch {nn_plan['patch_size']}, "
        f"batch {nn_plan['batch_size']}")
    install_trainer(venv)
    facts = {"prepare": {"dvc_repro_split": repro, "plan_and_preprocess": prep},
             "nnunet_2d_plan": {k: nn_plan[k] for k in ("patch_size", "batch_size", "spacing",
                                                        "median_image_size_in_voxels")}}
    return Peer(dataset, converted, split, plan, cases, splits, ident, name, work, env), facts


def run_round(peer: Peer, r: int, budget: float) -> tuple[list[dict], dict]:
    """Train nnU-Net's fold ``r`` for ``budget`` seconds, predict our round ``r``'s test images, score them."""
    where, logs = f"{peer.dataset} round {r}", peer.work / "logs"
    test = sorted(Round(r).select(peer.split)["test"]["id"])
    say(f"{where}: training on {len(peer.splits[r]['train'])} images (valid {len(peer.splits[r]['val'])}), "
        f"budget {budget:.0f} s")
    train = run(["nnUNetv2_train", str(peer.ident), "2d", str(r), "-tr", TRAINER_NAME, "-device", "cpu"],
                logs / f"train_fold{r}.log", dict(peer.env, MEDSEG_BUDGET_SECONDS=str(budget)))
    model = peer.work / "nnUNet_results" / peer.name / f"{TRAINER_NAME}__nnUNetPlans__2d"
    trained = json.loads((model / f"fold_{r}" / "budget.json").read_text())
    say(f"{where}: trained {trained['epochs']} epoch(s), {trained['iterations']} iterations "
        f"({trained['seconds_per_iteration']:.2f} s each) in {trained['trained_seconds']:.0f} s "
        f"(process {train['seconds']:.0f} s); predicting {len(test)} test images")
    inputs, outputs = peer.work / "test" / f"fold_{r}", peer.work / "predictions" / f"fold_{r}"
    inputs.mkdir(parents=True)
    for sid in test:
        shutil.copyfile(peer.converted.sample(sid).image, inputs / f"{peer.cases[sid]}_0000.png")
    predict = run(["nnUNetv2_predict", "-i", str(inputs), "-o", str(outputs), "-d", str(peer.ident), "-c", "2d",
                   "-f", str(r), "-tr", TRAINER_NAME, "-chk", "checkpoint_final.pth", "-device", "cpu",
                   "-npp", "1", "-nps", "1", "--disable_progress_bar"], logs / f"predict_fold{r}.log", peer.env)
    converted, rows = peer.converted, []
    groups = peer.plan.evaluate.groups(converted.classes)
    for sid in test:
        _, target = converted.read(sid)
        pred = read_png(outputs / f"{peer.cases[sid]}.png")
        scored = score_image(sid, converted.row(sid)["image_class"], pred, target, converted.classes,
                             converted.image_classes, groups, group=peer.split.set_index("id").loc[sid, "group"])
        rows += [{**row, "fold": r} for row in scored.rows]
    dice = pd.DataFrame(rows).groupby("class")["dice"].mean().round(3).to_dict()
    say(f"{where}: predicted in {predict['seconds']:.0f} s; mean test Dice {dice}")
    return rows, {**trained, "train_process": train, "predict": predict, "n_train": len(peer.splits[r]["train"]),
                  "n_valid": len(peer.splits[r]["val"]), "n_test": len(test)}


def measure(dataset: str, rounds: list[int] | None, budget: float | None, venv: Path, work: Path,
            args: argparse.Namespace) -> dict:
    peer, facts = prepare(dataset, work, venv, args)
    folds = peer.plan.split.folds
    rounds = list(range(folds)) if rounds is None else rounds
    seconds = budgets(dataset, folds, budget)
    rows, per_round = [], {}
    for r in rounds:
        found, per_round[f"fold{r}"] = run_round(peer, r, seconds[r])
        rows += found
    per_image, classes, cfg = pd.DataFrame(rows), peer.converted.classes, peer.plan.evaluate
    groups = cfg.groups(classes)
    metrics = aggregate(per_image, classes, cfg.bootstrap, cfg.seed, groups)
    metrics["cv"] = without_nan(cross_validation(per_image, classes, groups))
    return {"dataset": dataset, "rounds": rounds, "budget_seconds": {f"fold{r}": seconds[r] for r in rounds},
            **facts, "settings": {"trainer": TRAINER_NAME, "iterations_per_epoch": args.iterations,
                                  "nnUNet_n_proc_DA": args.da_workers, "torch_threads": args.threads,
                                  "lr": "poly 0.9 over the budget", "checkpoint": "checkpoint_final.pth",
                                  "tta": "mirroring (nnU-Net's default)"},
            "per_round": per_round, "eval": metrics}


def ours(dataset: str) -> dict:
    path = real_data.RESULTS / "real_data" / f"{dataset}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def report(results: list[dict]) -> str:
    lines = ["# nnU-Net v2 next to our pipeline, same folds, same metric, same training time\n",
             "Command: `python benchmarks/nnunet_peer.py` (protocol in its docstring). nnU-Net v2 2D with its "
             "default plan, augmentation, loss and mirroring TTA, trained on the CPU for the wall-clock seconds our "
             "pipeline's training took in the same round (learning rate annealed over that budget, final "
             "checkpoint), on our train images of each round, scored on its held-out test images with our "
             "evaluate code: per-image Dice at native size, pooled over the rounds run, 95% bootstrap interval.\n",
             "| dataset | scored | rounds | nnU-Net Dice [95% CI] | ours Dice [95% CI] | budget s/round | nnU-Net "
             "epochs x iterations/round | s/iteration | 2d patch, batch | measured |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        score = real_data.DATASETS.get(r["dataset"], {}).get("score") or next(iter(r["eval"]["dice"]))
        mine = ours(r["dataset"])
        theirs = real_data.fmt(mine["eval"]["dice"].get(score)) + f" ({mine['commit']})" if mine else "n/a"
        rounds = list(r["per_round"].values())
        budget = ", ".join(f"{s:.0f}" for s in r["budget_seconds"].values())
        trained = ", ".join(f"{x['epochs']}x{x['iterations']}" for x in rounds)
        per_iteration = sum(x["seconds_per_iteration"] for x in rounds) / len(rounds)
        nn_plan, v = r["nnunet_2d_plan"], r["versions"]
        lines.append(f"| {r['dataset']} | {score} | {','.join(map(str, r['rounds']))} | "
                     f"{real_data.fmt(r['eval']['dice'][score])} | {theirs} | {budget} | {trained} | "
                     f"{per_iteration:.2f} | {nn_plan['patch_size']}, {nn_plan['batch_size']} | {r['date']}, "
                     f"nnunetv2 {v['nnunetv2']}, torch {v['torch']}, {r['cpu']}, load {r['load_average'][0]:.1f}, "
                     f"at {r['commit']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="us-liver-mini", help="comma-separated, with split.folds >= 3")
    parser.add_argument("--rounds", default=None, help="comma-separated rounds, e.g. 0 (default: all)")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="training seconds per round (default: our pipeline's, per round)")
    parser.add_argument("--nnunet-venv", default="/work/nnunet/.venv", help="nnU-Net's own venv (see the docstring)")
    parser.add_argument("--out", default=str(real_data.RESULTS / "nnunet_peer.md"), help="the markdown table")
    parser.add_argument("--store", default=str(RESULTS), help="one JSON per dataset measured")
    parser.add_argument("--work", default=None,
                        help="keep nnU-Net's folders and logs in WORK/<dataset>, replaced if there")
    parser.add_argument("--iterations", type=int, default=25, help="training iterations per nnU-Net epoch")
    parser.add_argument("--da-workers", type=int, default=1, help="nnUNet_n_proc_DA (0: augment in the main process)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    venv = Path(args.nnunet_venv)
    if not (venv / "bin" / "nnUNetv2_train").is_file():
        sys.exit(f"{venv} holds no nnU-Net (no bin/nnUNetv2_train); install it with:\n  " + "\n  ".join(INSTALL))
    if not real_data.SHARED.is_dir():
        sys.exit(f"{real_data.SHARED} is absent: this benchmark needs the shared real-data samples")
    rounds = None if args.rounds is None else [int(r) for r in args.rounds.split(",")]
    status = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                            cwd=real_data.REPO, capture_output=True, text=True, check=True).stdout
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=real_data.REPO, capture_output=True,
                            text=True, check=True).stdout.strip() + ("-dirty" if status.strip() else "")
    store = Path(args.store)
    store.mkdir(parents=True, exist_ok=True)
    for dataset in filter(None, args.datasets.split(",")):
        load = os.getloadavg()[0]
        if load > 0.5:
            say(f"warning: load average {load:.1f}; a busy CPU buys nnU-Net fewer iterations in its budget")
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.work) / dataset if args.work else Path(tmp)
            if work.exists() and args.work:
                shutil.rmtree(work)
            result = measure(dataset, rounds, args.budget_seconds, venv, work, args)
        result.update(versions=versions(venv), cpu=real_data.cpu_model(), cores=os.cpu_count(), commit=commit,
                      date=f"{datetime.now():%Y-%m-%d}", load_average=[load, os.getloadavg()[0]])
        (store / f"{dataset}.json").write_text(json.dumps(result, indent=1) + "\n")
        say(json.dumps({"dataset": dataset, "dice": {k: v["mean"] for k, v in result["eval"]["dice"].items()},
                        "ci": {k: [v["ci_low"], v["ci_high"]] for k, v in result["eval"]["dice"].items()}}))
    text = report([json.loads(p.read_text()) for p in sorted(store.glob("*.json"))])
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
