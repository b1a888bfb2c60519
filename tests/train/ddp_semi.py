"""Semi-supervised ``fit`` in every process of ``torchrun`` (used by test_semi_stage.py).

    torchrun --standalone --nproc_per_node 2 tests/train/ddp_semi.py OUT_DIR METHOD

Each process trains the tiny model of ``ddp_fit`` with METHOD (fixmatch with
feature dropout, or mean_teacher) on labelled and unlabelled discs, then
moves a mean teacher one step from a student whose batch-norm statistics
differ per process, and saves to OUT_DIR/rank<r>.pt its final weights,
validation Dice and that teacher's state.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ddp_fit import CONFIG, make_set
from medseg.config import TrainConfig
from medseg.model.factory import build_model
from medseg.model.runtime import seed_everything
from medseg.train.distributed import session, threads_per_process
from medseg.train.loop import fit
from medseg.train.semi import build_consistency

CLASSES = ["background", "disc"]
METHODS = {"fixmatch": {"method": "fixmatch", "threshold": 0.6, "feature_dropout": 0.5, "rampup": 0.0},
           "mean_teacher": {"method": "mean_teacher", "rampup": 0.0}}


def run(out: Path, method: str) -> None:
    cfg = TrainConfig(**{**CONFIG, "epochs": 2, "model": {**CONFIG["model"], "norm": "batch"}},
                      semi_supervised=METHODS[method])
    with session("auto", torch.device("cpu")) as (world, device):
        seed_everything(cfg.seed, threads_per_process(cfg.threads, world))
        model = build_model(cfg.model, 1, len(CLASSES))
        result = fit(model, make_set(12, 0), make_set(6, 1), cfg, CLASSES, device, world=world,
                     unlabelled=make_set(10, 2))
        teacher_cfg = TrainConfig(**{**CONFIG, "model": {**CONFIG["model"], "norm": "batch"}},
                                  semi_supervised=METHODS["mean_teacher"])
        student = build_model(teacher_cfg.model, 1, len(CLASSES))
        semi = build_consistency(teacher_cfg, make_set(4, 3), student, device, torch.contiguous_format, world)
        with torch.no_grad():
            for buffer in student.buffers():
                if buffer.is_floating_point():
                    buffer.fill_(float(world.rank + 1))  # each process's own statistics
        semi.after_step()
        torch.save({"params": {k: v for k, v in model.state_dict().items() if "running" not in k},
                    "val_dice": [s.val_dice for s in result.history],
                    "unsup_loss": [s.semi["unsup_loss"] for s in result.history],
                    "teacher": semi.teacher.state_dict(), "processes": world.size}, out / f"rank{world.rank}.pt")


if __name__ == "__main__":
    run(Path(sys.argv[1]), sys.argv[2])
