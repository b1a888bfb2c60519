"""Interrupted stages leave nothing that DVC or the next stage would take for a result.

First the pieces in-process: ``medseg.atomic`` deletes the temporary
siblings a dead writer left behind and keeps a live writer's. Then, marked
slow, the pipeline as a user runs it: one clone per module, built once with
`dvc repro` on a small config; each test starts `dvc repro -f -s
<stage>@synthetic` in its own process group, waits until the stage is
demonstrably writing, and sends SIGTERM (what `kill`, a scheduler or a
container stop sends) or SIGKILL (the OOM killer, a lost machine) to the
whole group. Afterwards every declared output of the stage is absent or
complete, DVC does not report the stage up to date while an output is
missing and `dvc commit` refuses it, SIGTERM leaves no temporary files and
no MLflow run RUNNING, and `dvc repro` completes.

With SIGKILL no handler runs: temporary siblings stay until the next run of
the stage deletes them (DVC and git ignore them meanwhile), and an MLflow run
opened by the killed process stays RUNNING until the next run opened or
synced on this host finds its process gone and ends it as FAILED.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import clone_work_tree, run, shrink
from medseg.io.atomic import atomic_dir, atomic_file, remove_stale_siblings
from medseg.io.errors import Terminated, raise_terminated

DATASET = "synthetic"
TEMP = re.compile(r"\..+\.(tmp-\d+-.+|old-\d+)$")


# --------------------------------------------------------------------------- atomic writes, in-process
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_writers_leftovers_go_when_the_output_is_next_written(tmp_path):
    final = tmp_path / "out"
    gone = dead_pid()
    (tmp_path / f".out.tmp-{gone}-abc").mkdir()
    (tmp_path / f".out.tmp-{gone}-abc" / "half.png").write_bytes(b"\x89PNG")
    (tmp_path / f".out.old-{gone}").write_text("previous")
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (final / "new.txt").read_text() == "new"


def test_a_live_writers_temporary_files_and_other_outputs_are_left_alone(tmp_path):
    final = tmp_path / "eval.json"
    live = tmp_path / f".eval.json.tmp-{os.getppid()}-xyz"   # our parent is alive
    other = tmp_path / f".eval.json.other.tmp-{dead_pid()}-xyz"  # belongs to "eval.json.other"
    for path in (live, other):
        path.write_text("{}")
    assert remove_stale_siblings(final) == []
    with atomic_file(final) as fh:
        fh.write("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["eval.json", live.name, other.name])


def test_a_failed_write_leaves_the_previous_output_and_no_temporary_file(tmp_path):
    final = tmp_path / "train.json"
    final.write_text("previous")
    with pytest.raises(RuntimeError), atomic_file(final) as fh:
        fh.write("half")
        raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["train.json"] and final.read_text() == "previous"


@pytest.fixture
def sigterm_raises():
    """SIGTERM raises ``Terminated``, as ``run_stage`` makes it, for the test's duration."""
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    yield
    signal.signal(signal.SIGTERM, previous)


def sigterm_to_another_thread_once_made(monkeypatch, name: str) -> None:
    """Make ``tempfile.<name>`` send SIGTERM to another thread of this process once it has made its file, and
    run on a few bytecodes: the kernel's choice when the main thread has it masked and OpenBLAS's threads have
    not. That thread's C handler marks the signal; Python's handler then runs in the main thread."""
    done = threading.Event()
    other = threading.Thread(target=done.wait, daemon=True)
    other.start()
    real = getattr(tempfile, name)

    def make(*args, **kwargs):
        made = real(*args, **kwargs)
        signal.pthread_kill(other.ident, signal.SIGTERM)
        time.sleep(0.1)
        for _ in range(1000):  # the main thread looks for marked signals at bytecodes like these
            pass
        done.set()
        return made

    monkeypatch.setattr(tempfile, name, make)


@pytest.mark.parametrize("write", ["atomic_dir", "atomic_file"])
def test_a_sigterm_taken_while_the_temporary_sibling_is_made_leaves_nothing(tmp_path, monkeypatch, sigterm_raises,
                                                                              write):
    sigterm_to_another_thread_once_made(monkeypatch, "mkdtemp" if write == "atomic_dir" else "mkstemp")
    final = tmp_path / "out"
    with pytest.raises(Terminated), (atomic_dir(final) if write == "atomic_dir" else atomic_file(final)):
        pytest.fail("the stop was not taken before the block")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is raise_terminated


def test_a_sigterm_during_the_swap_still_removes_the_previous_output(tmp_path, monkeypatch, sigterm_raises):
    final = tmp_path / "out"
    final.mkdir()
    (final / "previous.txt").write_text("previous")
    real = os.replace

    def replace(src, dst):  # SIGTERM between the two renames
        real(src, dst)
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Terminated), atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
        monkeypatch.setattr(os, "replace", replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (final / "new.txt").read_text() == "new"


# --------------------------------------------------------------------------- the pipeline, killed mid-stage
def small(data: dict) -> None:
    # Full-size images give fetch and convert a second or two of writing;
    # the small training size keeps train and evaluate short.
    shrink(data, per_class=6, image=None, epochs=3)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    repo = clone_work_tree(tmp_path_factory.mktemp("interrupt"), small)
    run(["dvc", "repro"], repo)
    return repo


def declared_outs(repo: Path, stage: str) -> list[Path]:
    """The stage's outs, metrics and plots as dvc.lock records them."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return [Path(out["path"]) for out in lock["stages"][f"{stage}@{DATASET}"]["outs"]]


def snapshot(repo: Path, outs: list[Path]) -> dict[Path, bytes]:
    """Every file of ``outs``, relative to the repo."""
    files = {}
    for out in outs:
        paths = sorted(p for p in (repo / out).rglob("*") if p.is_file()) if (repo / out).is_dir() else [repo / out]
        files.update({p.relative_to(repo): p.read_bytes() for p in paths})
    return files


# Files that differ between two complete runs: the MLflow run id, training seconds.
VOLATILE = {"mlflow_run.json", "train.json", "model.pt"}


def _modified_since(path: Path, since: float) -> bool:
    try:  # DVC may remove the output between a check and a stat
        return path.stat().st_mtime >= since
    except FileNotFoundError:
        return False


def started(repo: Path, stage: str, outs: list[Path], since: float) -> bool:
    """True once the stage is demonstrably writing and not yet done."""
    if stage == "train":  # a run is open in MLflow and at least one epoch is done
        return any((repo / "metrics/datasets" / DATASET).glob(".progress.tmp-*/epoch_001.png"))
    if stage == "evaluate":  # evaluate writes its small files last, in one burst
        return any(_modified_since(repo / out, since) or any((repo / out).parent.glob(f".{out.name}.tmp-*"))
                   for out in outs)
    return any((repo / outs[0]).parent.glob(f".{outs[0].name}.tmp-*"))


def env() -> dict[str, str]:
    out = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out.pop("MLFLOW_TRACKING_URI", None)
    return out


def interrupt(repo: Path, stage: str, outs: list[Path], sig: signal.Signals) -> str:
    """Start the stage under DVC, signal its whole process group once it is writing; its output."""
    since = time.time() - 0.05  # the kernel stamps files with a clock a few ms coarse
    proc = subprocess.Popen(["dvc", "repro", "-f", "-s", f"{stage}@{DATASET}"], cwd=repo, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not started(repo, stage, outs, since):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            proc.wait()
            reader.join()
            pytest.fail(f"{stage} never got to writing before it ended:\n{''.join(chunks)}")
        time.sleep(0.01)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    reader.join(timeout=120)  # the stage itself may outlive dvc while it cleans up
    output = "".join(chunks)
    assert proc.returncode != 0, f"dvc repro was not interrupted:\n{output}"
    assert group_ended(proc.pid, timeout=60), f"a process of the stage is still running after {sig.name}"
    return output


def group_ended(pgid: int, timeout: float) -> bool:
    """Wait until no process of group ``pgid`` is left (the stage and its workers exit, never hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    return False


def dvc_json(repo: Path, *args: str) -> dict:
    """``dvc <args> --json``, parsed; DVC's warnings go to stderr."""
    done = subprocess.run(["dvc", *args, "--json"], cwd=repo, env=env(), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def leftovers(repo: Path) -> list[Path]:
    return sorted(p.relative_to(repo) for top in ("data", "models", "metrics") for p in (repo / top).rglob(".*")
                  if TEMP.match(p.name))


def runs_by_status(repo: Path) -> dict[str, list[str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    found: dict[str, list[str]] = {}
    for experiment in client.search_experiments():
        for got in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"]):
            found.setdefault(got.info.status, []).append(got.info.run_id)
    return found


LONG_STAGES = ("fetch", "convert", "augment", "train", "evaluate")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("stage", LONG_STAGES)
def test_interrupted_stage_leaves_no_partial_output_and_repro_completes(clone, stage, sig):
    outs = declared_outs(clone, stage)
    before = snapshot(clone, outs)
    runs_before, stale_before = runs_by_status(clone), leftovers(clone)

    try:
        output = interrupt(clone, stage, outs, sig)

        # Each output is gone (DVC removes them before running the stage) or complete.
        missing = [out for out in outs if not (clone / out).exists()]
        for out in set(outs) - set(missing):
            now = snapshot(clone, [out])
            assert sorted(now) == sorted(k for k in before if k == out or out in k.parents), f"{out} is incomplete"
            for name, data in now.items():
                assert name.name in VOLATILE or data == before[name], f"{name} differs from a complete run"
        if missing:
            status = dvc_json(clone, "status", f"{stage}@{DATASET}")
            assert f"{stage}@{DATASET}" in status, f"DVC calls {stage} up to date with {missing} missing"
            with pytest.raises(AssertionError, match="does not exist|missing"):
                run(["dvc", "commit", "-f", f"{stage}@{DATASET}"], clone)

        runs_after, opened = runs_by_status(clone), set()
        if sig == signal.SIGTERM:
            assert leftovers(clone) == stale_before, output  # earlier SIGKILL tests' leftovers may remain
            assert set(runs_after.get("RUNNING", [])) <= set(runs_before.get("RUNNING", [])), output
            if stage == "train":  # the run this attempt opened is marked, not left open
                killed = set(runs_after.get("KILLED", [])) - set(runs_before.get("KILLED", []))
                assert len(killed) == 1, runs_after
        else:  # nothing can run on SIGKILL: only hidden temporary siblings may remain, never an output's name
            assert all(TEMP.match(p.name) for p in leftovers(clone))
            opened = set(runs_after.get("RUNNING", [])) - set(runs_before.get("RUNNING", []))
            assert len(opened) <= 1, runs_after
    finally:  # the next test starts from a complete pipeline, whatever this one found
        run(["dvc", "repro"], clone)
    assert snapshot(clone, outs).keys() == before.keys()
    if sig == signal.SIGKILL and opened:  # the next sync on this host closes the dead process's run
        run(["dvc", "repro", "-f", "-s", f"track@{DATASET}"], clone)
        assert opened <= set(runs_by_status(clone).get("FAILED", [])), runs_by_status(clone)
