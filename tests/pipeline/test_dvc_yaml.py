"""dvc.yaml and the code agree: scripts, code deps from the import closure, output paths, params sections."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from medseg.config import load_params
from medseg.data import converted, results, shards
from medseg.io import paths

STAGES = ["fetch", "convert", "plan", "augment", "split", "train", "evaluate"]
LIBRARY = REPO / "stages" / "medseg"


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def body(stage: dict) -> dict:
    return stage.get("do", stage)


def _outs(stage: dict, item: str) -> set[str]:
    outs = set()
    for key in ("outs", "metrics", "plots"):
        for out in body(stage).get(key, []):
            name = next(iter(out)) if isinstance(out, dict) else out
            outs.add(name.replace("${item}", item))
    return outs


# --------------------------------------------------------------------------- the import closure
def module_path(name: str) -> Path | None:
    """The file of project module ``name`` (``medseg.io.paths``), or None if it is not one."""
    base = LIBRARY.parent.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Project modules ``path`` imports anywhere (also inside functions), with their parent packages."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            # ``from medseg.io import paths`` imports the module medseg.io.paths.
            names = [origin] + [f"{origin}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "medseg" and module_path(name):
                parts = name.split(".")
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return found


def import_closure(script: Path) -> set[Path]:
    """Every project file that running ``script`` imports, directly or not."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [module_path(name) for name in imported_modules(path)]
    return seen - {script}


def inert(path: Path) -> bool:
    """A module that is only a docstring (and ``from __future__``) cannot change an output."""
    statements = ast.parse(path.read_text()).body
    return all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) or
               isinstance(s, ast.ImportFrom) and s.module == "__future__" for s in statements)


def uncovered(files: set[Path], deps: list[str]) -> list[str]:
    """The files no dep covers: a dep is that file, or a folder above it."""
    targets = [REPO / dep for dep in deps]
    return sorted(str(f.relative_to(REPO)) for f in files
                  if not inert(f) and not any(f == t or t in f.parents for t in targets))


def code_deps(stage: dict) -> list[str]:
    return [d for d in body(stage)["deps"] if d.startswith("stages/medseg")]


def script_of(stage: dict) -> Path:
    return REPO / body(stage)["cmd"].split()[1]


@pytest.mark.parametrize("name", list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]))
def test_code_deps_cover_the_import_closure_of_the_stage(name: str) -> None:
    stage = dvc_stages()[name]
    script = script_of(stage)
    assert str(script.relative_to(REPO)) in body(stage)["deps"]
    closure = import_closure(script)
    assert uncovered(closure, body(stage)["deps"]) == [], f"add these package folders to {name}'s deps"
    unused = [d for d in code_deps(stage) if not any((REPO / d) == f or (REPO / d) in f.parents for f in closure)]
    assert unused == [], f"{name} imports nothing from these deps"


def test_the_closure_follows_every_kind_of_import() -> None:
    closure = import_closure(REPO / "stages" / "train.py")
    rel = {str(p.relative_to(LIBRARY)) for p in closure}
    assert "io/paths.py" in rel                         # from medseg.io import paths
    assert "train/datasets.py" in rel                   # from .datasets import ... inside medseg.train.run
    assert "data/preprocess.py" in rel                  # two imports away
    assert "tracking/__init__.py" in rel                # a package's __init__ runs on import
    assert not any(r.startswith("evaluate/") for r in rel)  # train does not import evaluation code


def test_a_missing_dep_is_caught() -> None:
    stage = dvc_stages()["augment"]
    deps = [d for d in body(stage)["deps"] if d != "stages/medseg/figures"]
    assert uncovered(import_closure(script_of(stage)), deps) == ["stages/medseg/figures/overlay.py"]


def test_a_stage_runs_its_own_checkouts_library(tmp_path: Path) -> None:
    """``python stages/<x>.py`` puts stages/ first on sys.path, ahead of the editable install: a clone or a
    ``dvc exp`` temporary copy runs the library its own deps hash, not the one pip installed."""
    clone = tmp_path / "clone" / "stages"
    shutil.copytree(LIBRARY, clone / "medseg", ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "probe.py").write_text("import medseg.io.paths\nprint(medseg.io.paths.__file__)\n")
    out = subprocess.run([sys.executable, str(clone / "probe.py")], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert Path(out.stdout.strip()) == clone / "medseg" / "io" / "paths.py"


# --------------------------------------------------------------------------- the rest of dvc.yaml
def test_stage_order_and_scripts():
    stages = dvc_stages()
    assert list(stages) == [*STAGES, "compare", "track"]
    for name in STAGES:
        do = stages[name]["do"]
        assert stages[name]["foreach"] == "${active}"
        assert do["cmd"] == f"python stages/{name}.py ${{item}}"
        assert (REPO / "stages" / f"{name}.py").is_file()


def test_outs_match_the_modules_that_own_them():
    stages = dvc_stages()
    ds = "some-dataset"
    metrics = paths.metrics_dir(ds)
    assert _outs(stages["fetch"], ds) == {str(paths.raw_dir(ds)), str(paths.provenance_file(ds))}
    assert _outs(stages["convert"], ds) == {str(paths.converted_dir(ds))}
    assert _outs(stages["plan"], ds) == {str(paths.plan_file(ds))}
    assert _outs(stages["augment"], ds) == {str(paths.augmented_dir(ds))}
    assert _outs(stages["split"], ds) == {str(paths.split_file(ds)), str(paths.audit_file(ds))}
    assert _outs(stages["train"], ds) == {str(paths.model_dir(ds)), str(paths.progress_dir(ds)),
                                          str(metrics / results.TRAIN_METRICS), str(metrics / results.TRAIN_HISTORY)}
    assert _outs(stages["evaluate"], ds) == {str(metrics / name) for name in (
        results.OVERLAYS, results.PER_IMAGE, results.PER_VOLUME, results.PIXEL_CONFUSION, results.EVAL_METRICS,
        results.IMAGE_CONFUSION)}
    assert _outs(stages["compare"], ds) == {str(p) for p in (paths.SUMMARY_JSON, paths.SUMMARY_MD,
                                                             paths.SUMMARY_DICE_CSV, paths.SUMMARY_PNG)}
    split_deps = {d.replace("${item}", ds) for d in stages["split"]["do"]["deps"]}
    assert str(paths.converted_dir(ds) / converted.MANIFEST) in split_deps
    assert str(paths.converted_dir(ds) / converted.IMAGES) in split_deps  # the leak audit hashes them
    assert str(paths.augmented_dir(ds) / shards.MANIFEST) in split_deps


def test_each_stage_reads_only_its_params():
    stages = dvc_stages()
    assert stages["fetch"]["do"]["params"] == ["datasets.${item}.source"]
    assert stages["convert"]["do"]["params"] == ["datasets.${item}.convert"]
    assert stages["plan"]["do"]["params"] == ["plan", "augment", "split", "train", "evaluate", "datasets.${item}"]
    plan = "data/plan/${item}.json"  # the later stages read their sections of the plan, not params.yaml
    assert stages["augment"]["do"]["params"] == [{plan: ["augment"]}]
    assert stages["split"]["do"]["params"] == [{plan: ["split"]}]
    assert stages["train"]["do"]["params"] == [{plan: ["train", "split.folds", "evaluate.combine"]}]
    assert stages["evaluate"]["do"]["params"] == [{plan: ["evaluate", "train.device", "train.threads",
                                                          "split.folds"]}]
    params = load_params(REPO / "params.yaml")
    for name in params.datasets:  # every profile has both sections DVC asks for
        assert params.dataset(name).source and params.dataset(name).convert


def test_every_listed_dep_exists():
    for stage in dvc_stages().values():
        for dep in body(stage)["deps"]:
            if dep.startswith("stages/"):
                assert (REPO / dep).exists(), dep
