"""dvc.yaml and the code agree: output paths, scripts, params sections."""
from __future__ import annotations

import yaml

from conftest import REPO
from medseg import paths
from medseg.config import load_params

STAGES = ["fetch", "convert", "augment", "split", "train", "evaluate"]


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _outs(stage: dict, item: str) -> set[str]:
    outs = set()
    for out in stage["do"]["outs"]:
        name = next(iter(out)) if isinstance(out, dict) else out
        outs.add(name.replace("${item}", item))
    return outs


def test_stage_order_and_scripts():
    stages = dvc_stages()
    assert list(stages) == [*STAGES, "compare", "track"]
    for name in STAGES:
        do = stages[name]["do"]
        assert stages[name]["foreach"] == "${active}"
        assert do["cmd"] == f"python stages/{name}.py ${{item}}"
        assert f"stages/{name}.py" in do["deps"]
        assert (REPO / "stages" / f"{name}.py").is_file()


def test_outs_match_paths_module():
    stages = dvc_stages()
    ds = "some-dataset"
    assert _outs(stages["fetch"], ds) == {str(paths.raw_dir(ds)), str(paths.provenance_file(ds))}
    assert _outs(stages["convert"], ds) == {str(paths.converted_dir(ds))}
    assert _outs(stages["augment"], ds) == {str(paths.augmented_dir(ds))}
    assert _outs(stages["split"], ds) == {str(paths.split_file(ds))}
    split_deps = {d.replace("${item}", ds) for d in stages["split"]["do"]["deps"]}
    assert str(paths.converted_dir(ds) / paths.MANIFEST) in split_deps
    assert str(paths.augmented_dir(ds) / paths.MANIFEST) in split_deps


def test_each_stage_reads_only_its_params():
    stages = dvc_stages()
    assert stages["fetch"]["do"]["params"] == ["datasets.${item}.source"]
    assert stages["convert"]["do"]["params"] == ["datasets.${item}.convert"]
    assert stages["augment"]["do"]["params"] == ["augment"]
    assert stages["split"]["do"]["params"] == ["split"]
    assert stages["train"]["do"]["params"] == ["train", "split.folds"]
    params = load_params(REPO / "params.yaml")
    for name in params.datasets:  # every profile has both sections DVC asks for
        assert params.dataset(name).source and params.dataset(name).convert


def test_library_deps_exist():
    for stage in dvc_stages().values():
        for dep in stage.get("do", stage)["deps"]:
            if dep.startswith("stages/"):
                assert (REPO / dep).is_file(), dep
