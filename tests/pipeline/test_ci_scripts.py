"""The GitHub workflows and the .ci/ scripts they call.

The workflow files are read and held to the repo: every script a step calls
exists and is executable, the install and test steps are the README's
commands, credentials come from repository secrets only. Then the scripts run
for real, the way the workflows run them, in a temporary clone on a tiny
config, with a bare git repository as ``origin`` and a local folder as the
DVC remote: a retraining from an empty remote (its model then fetched from
origin with ``dvc artifacts get --stage champion``), a retraining on a fresh
checkout that restores everything from the remote, and the pipeline check of
a pull request against a base with and without metrics.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO, clone_work_tree, ran_stages, run, shrink

WORKFLOWS = REPO / ".github" / "workflows"
ACTIVATE = ". .venv/bin/activate && "
DS = "synthetic"
# Results the retraining commits to git (outputs with `cache: false` and dvc.lock).
GIT_RESULTS = ("dvc.lock", f"data/split/{DS}.csv", f"data/split/{DS}_audit.json", f"metrics/datasets/{DS}/eval.json",
               f"metrics/datasets/{DS}/train.json", f"metrics/datasets/{DS}/train_history.csv",
               "metrics/summary.json")


# --------------------------------------------------------------------------- the workflow files
def workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


def steps(wf: dict) -> list[dict]:
    return [step for job in wf["jobs"].values() for step in job["steps"]]


def step_named(wf: dict, prefix: str) -> dict:
    matches = [step for step in steps(wf) if step.get("name", "").startswith(prefix)]
    assert len(matches) == 1, [step.get("name") for step in steps(wf)]
    return matches[0]


def readme_bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


@pytest.mark.parametrize("name", ["ci.yml", "retrain.yml"])
def test_every_script_a_workflow_calls_exists_and_is_executable(name: str) -> None:
    called = {script for step in steps(workflow(name)) for script in re.findall(r"\.ci/[\w./-]+", step.get("run", ""))}
    assert called, f"{name} calls no script in .ci/"
    for script in called:
        path = REPO / script
        assert path.is_file() and os.access(path, os.X_OK), f"{name} calls {script}, which is missing or not executable"
        assert path.read_text().startswith("#!/usr/bin/env bash\n")


@pytest.mark.parametrize("name", ["ci.yml", "retrain.yml"])
def test_workflows_install_as_the_readme_says_and_pin_their_actions(name: str) -> None:
    setup = readme_bash_blocks()[0].strip()
    wf = workflow(name)
    install = step_named(wf, "Install")["run"].strip()
    assert setup == f"{install} && dvc repro"  # the README's setup line, minus running the pipeline
    for step in steps(wf):
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step["uses"]
    python = [step["with"]["python-version"] for step in steps(wf) if step.get("uses", "").startswith(
        "actions/setup-python@")]
    assert python == ["3.11"]


def test_ci_runs_the_readme_test_command_then_the_pipeline_check() -> None:
    wf = workflow("ci.yml")
    assert set(wf["on"]) == {"push", "pull_request"}
    runs = [step.get("run", "").strip() for step in steps(wf)]
    test_command = readme_bash_blocks()[1].strip()
    assert test_command in runs
    assert runs.index(test_command) < runs.index(step_named(wf, "Pipeline")["run"].strip())
    checkout = steps(wf)[0]
    assert checkout["uses"].startswith("actions/checkout@") and checkout["with"]["fetch-depth"] == 0


def test_ci_lints_then_runs_the_readme_test_command() -> None:
    test_command = readme_bash_blocks()[1].strip()
    local = (REPO / ".ci" / "run").read_text().splitlines()
    assert "ruff check ." in local and local[-1] == test_command.removeprefix(ACTIVATE)
    assert local.index("ruff check .") < local.index(local[-1])
    runs = [step.get("run", "").strip() for step in steps(workflow("ci.yml"))]
    assert runs.index(ACTIVATE + "ruff check .") < runs.index(test_command)


def test_retrain_is_manual_and_scheduled_with_credentials_from_secrets_only() -> None:
    wf = workflow("retrain.yml")
    assert {"workflow_dispatch", "schedule"} == set(wf["on"])
    assert wf["on"]["schedule"][0]["cron"]
    assert wf["permissions"] == {"contents": "write"}
    env = step_named(wf, "Pull, repro, push")["env"]
    for name in ("DVC_REMOTE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GCS_CREDENTIALS_JSON",
                 "DVC_SSH_KEY"):
        assert env[name] == f"${{{{ secrets.{name} }}}}"
    text = (WORKFLOWS / "retrain.yml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY|\"private_key\"", text)


# --------------------------------------------------------------------------- the scripts, run for real
def tiny(data: dict) -> None:
    """The CI small config of .ci/pipeline_check.sh with one epoch fewer, so its check reruns training."""
    shrink(data, copies=1, epochs=1, previews=1, overlays=1, bootstrap=20)


def script_command(name: str, prefix: str) -> tuple[str, dict]:
    """The shell command of a workflow step after its venv activation (the test runs in this venv), and its env."""
    step = step_named(workflow(name), prefix)
    assert step["run"].startswith(ACTIVATE)
    return step["run"].removeprefix(ACTIVATE), step.get("env", {})


def run_step(name: str, prefix: str, cwd: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    command, workflow_env = script_command(name, prefix)
    assert set(env) - {"GITHUB_STEP_SUMMARY"} <= set(workflow_env)  # only what the workflow also passes
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return run(["bash", "-c", command], cwd)


def git_show(repo: Path, rev: str, path: str) -> str:
    return run(["git", "show", f"{rev}:{path}"], repo)


def md_rows(text: str, path: str) -> list[list[str]]:
    """Rows of the markdown tables in ``text`` whose first cell is ``path``, as lists of cells."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return [row for row in rows if row[0] == path]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A clone of the repo on `main` with no results committed, its bare `origin`, an empty DVC remote folder."""
    root = tmp_path_factory.mktemp("ci")
    clone = clone_work_tree(root / "clone", tiny)
    # Results left in the source work tree by a local run are not part of the start state.
    stale = [p for p in GIT_RESULTS if (clone / p).exists()] + [
        str(p.relative_to(clone)) for p in (clone / "metrics").rglob("*") if p.is_file() and p.name != ".gitkeep"]
    if stale:
        run(["git", "rm", "-q", "-r", "--cached", "--ignore-unmatch", *stale], clone)
        for path in stale:
            (clone / path).unlink(missing_ok=True)
        run(["git", "commit", "-qm", "no results yet"], clone)
    run(["git", "branch", "-M", "main"], clone)
    run(["git", "init", "-q", "--bare", "--initial-branch=main", str(root / "origin.git")], root)
    run(["git", "remote", "add", "origin", str(root / "origin.git")], clone)
    run(["git", "push", "-q", "-u", "origin", "main"], clone)
    return {"root": root, "clone": clone, "origin": root / "origin.git", "remote": root / "dvc-remote"}


def retrain_env(world: dict[str, Path], summary: Path) -> dict[str, str]:
    return {"RETRAIN_BRANCH": "retrain", "PUSH_BRANCH": "1", "DVC_REMOTE_URL": str(world["remote"]),
            "GITHUB_STEP_SUMMARY": str(summary)}


@pytest.mark.slow
def test_retrain_from_an_empty_remote_commits_results_to_a_branch_and_fills_the_remote(world, monkeypatch) -> None:
    clone, origin, summary = world["clone"], world["origin"], world["root"] / "retrain-summary.md"
    main = run(["git", "rev-parse", "main"], clone).strip()
    assert not world["remote"].exists()  # first run: nothing to pull

    out = run_step("retrain.yml", "Pull, repro, push", clone, retrain_env(world, summary), monkeypatch)

    assert {f"{stage}@{DS}" for stage in ("fetch", "train", "evaluate", "track")} <= ran_stages(out)
    # origin has the branch: one commit on top of main, holding dvc.lock and the metrics, not the cached data.
    assert run(["git", "rev-parse", "retrain~1"], origin).strip() == main
    files = set(run(["git", "ls-tree", "-r", "--name-only", "retrain"], origin).split())
    assert set(GIT_RESULTS) <= files
    assert not any(name.startswith(("models/synthetic/", f"data/raw/{DS}/")) for name in files)
    for path in ("dvc.lock", f"metrics/datasets/{DS}/eval.json"):
        assert git_show(origin, "retrain", path) == (clone / path).read_text()
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], clone) == ""
    # The DVC remote holds every cached output and the run-cache.
    assert "Cache and remote 'ci' are in sync" in run(["dvc", "status", "--cloud"], clone)
    assert (world["remote"] / "runs").is_dir()
    assert 'remote "ci"' not in (clone / ".dvc/config").read_text()  # the remote URL stays out of the commit
    report = summary.read_text()
    assert "## Retraining of" in report and "to `retrain`" in report
    assert "has no committed metrics yet" in report  # main has none
    eval_rows = md_rows(report, f"metrics/datasets/{DS}/eval.json")
    assert any(row[1] == "mean_fg_dice" and row[2] == "-" for row in eval_rows)
    # DVC's model registry: the first model is version 1 and the champion, both tags on the results commit, pushed.
    tags = {f"{DS}@v1.0.0", f"{DS}#champion#1"}
    assert set(run(["git", "tag", "--list"], origin).split()) == tags
    for tag in tags:
        assert run(["git", "rev-parse", f"{tag}^{{commit}}"], origin) == run(["git", "rev-parse", "retrain"], origin)
    assert "promoted** to `@champion`" in report and f"`{DS}#champion#1`" in report
    got = world["root"] / "champion"
    run(["dvc", "artifacts", "get", str(origin), DS, "--stage", "champion", "--remote", "ci", "--remote-config",
         f"url={world['remote']}", "-o", str(got)], world["root"])
    assert (got / "model.pt").read_bytes() == (clone / "models" / DS / "model.pt").read_bytes()


@pytest.mark.slow
def test_retrain_on_a_fresh_checkout_of_merged_results_pulls_and_reruns_nothing(world, monkeypatch, tmp_path) -> None:
    # The results branch was merged into main; the next scheduled run starts on a new runner.
    origin = world["origin"]
    run(["git", "update-ref", "refs/heads/main", "refs/heads/retrain"], origin)
    fresh = tmp_path / "runner"
    run(["git", "clone", "-q", "--branch", "main", str(origin), str(fresh)], tmp_path)
    assert not (fresh / "models" / DS).exists()
    summary = tmp_path / "summary.md"

    out = run_step("retrain.yml", "Pull, repro, push", fresh, retrain_env(world, summary), monkeypatch)

    assert ran_stages(out) == set()  # everything came from the remote
    assert (fresh / "models" / DS / "model.pt").is_file()
    assert run(["git", "rev-parse", "retrain"], origin) == run(["git", "rev-parse", "main"], origin)
    report = summary.read_text()
    assert "Nothing changed" in report and "No metric changed" in report
    # Its own new MLflow store calls the result version 1 again: the tags on origin already say so.
    assert set(run(["git", "tag", "--list"], origin).split()) == {f"{DS}@v1.0.0", f"{DS}#champion#1"}
    assert "Git tags made: none" in report


@pytest.mark.slow
def test_pipeline_check_writes_metrics_and_params_diff_against_the_base(world, monkeypatch) -> None:
    clone = world["clone"]
    # A pull request on top of the retrained results that changes the learning rate.
    run(["git", "checkout", "-q", "-b", "feature", "retrain"], clone)
    params = clone / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.002", "lr: 0.003", 1))
    run(["git", "commit", "-qam", "lr 0.003"], clone)
    summary = world["root"] / "check-summary.md"

    out = run_step("ci.yml", "Pipeline", clone, {"BASE_REF": "origin/retrain", "GITHUB_STEP_SUMMARY": str(summary)},
                   monkeypatch)

    assert {f"{stage}@{DS}" for stage in ("train", "evaluate")} | {"compare"} <= ran_stages(out)
    assert yaml.safe_load(params.read_text())["train"]["epochs"] == 2  # the small config was applied
    report = summary.read_text()
    assert "## Pipeline check" in report and "`train.epochs=2`" in report
    metrics_section, params_section = report.split("### Params", 1)
    assert "| origin/retrain" in metrics_section and "workspace" in metrics_section
    fg_dice = [row for row in md_rows(metrics_section, f"metrics/datasets/{DS}/eval.json") if row[1] == "mean_fg_dice"]
    assert len(fg_dice) == 1 and "-" not in fg_dice[0][2:4]  # the base has metrics: old and new values
    assert "has no committed metrics" not in metrics_section
    changed = {row[1]: row[2:4] for row in md_rows(params_section, "params.yaml")}
    assert changed["train.lr"] == ["0.002", "0.003"]  # the pull request's change
    assert changed["train.epochs"] == ["1", "2"]  # the CI small config

    # A push that creates a branch has no "before" commit: the default branch is the base, and it has no metrics.
    summary = world["root"] / "push-summary.md"
    out = run_step("ci.yml", "Pipeline", clone, {"BASE_REF": "0" * 40, "DEFAULT_BRANCH": "main",
                                                 "GITHUB_STEP_SUMMARY": str(summary)}, monkeypatch)
    assert ran_stages(out) == set()  # same config as before: nothing to run
    report = summary.read_text()
    assert "Base `origin/main` has no committed metrics yet" in report
    assert any(row[1] == "mean_fg_dice" and row[2] == "-" and row[3] != "-"
               for row in md_rows(report, f"metrics/datasets/{DS}/eval.json"))

    # A base that was never fetched is a line in the report, not a failed job.
    summary = world["root"] / "unknown-summary.md"
    run_step("ci.yml", "Pipeline", clone, {"BASE_REF": "origin/gone", "GITHUB_STEP_SUMMARY": str(summary)},
             monkeypatch)
    assert "Base `origin/gone` is not a commit in this clone" in summary.read_text()
