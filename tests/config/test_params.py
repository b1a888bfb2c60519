"""params.yaml loading: the shipped file is valid; bad files name the key."""
from __future__ import annotations

import copy

import pytest
import yaml

from conftest import REPO
from medseg.config import ConfigError, load_params


@pytest.fixture()
def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _load(tmp_path, data: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_params(path)


def test_shipped_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.active == ["synthetic"]
    assert {"synthetic", "aul", "us-liver-mini", "busi-malignant-mini", "chase-retina-mini",
            "tsd-retinal-vessel-7z"} <= set(params.datasets)
    aul = params.dataset("aul").source.remote_files()
    assert [f.md5 for f in aul] == ["c37fef0cb2730236a79ef57e5315995e", "63894a9e5654a69c3b94bda84071dfb0",
                                    "a7e16299b2cf12ca4a6c3468d2e4978f"]
    assert aul[0].url == "https://zenodo.org/records/7272660/files/Benign.zip?download=1"
    quirks = params.dataset("aul").convert.annotation
    assert (quirks.outline_is_liver, quirks.missing_liver) == (["229", "306"], ["374"])
    # The quirks are AUL's, not its format's: the generated dataset has none.
    assert params.dataset("synthetic").convert.annotation.outline_is_liver == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p["augment"].update(bogus=1), "augment.bogus: unknown key"),
        (lambda p: p["datasets"]["synthetic"]["source"].update(colour="x"),
         "datasets.synthetic.source.colour: unknown key"),
        (lambda p: p["datasets"]["synthetic"]["source"].update(height="tall"), "datasets.synthetic.source.height:"),
        (lambda p: p["split"].update(valid="a lot"), "split.valid:"),
        (lambda p: p["split"].update(labelled_fraction=0), "split.labelled_fraction: Input should be greater than 0"),
        (lambda p: p["split"].update(labelled_fraction=1.5),
         "split.labelled_fraction: Input should be less than or equal to 1"),
        (lambda p: p["datasets"]["busi-malignant-mini"]["convert"]["annotation"].update(foreground="tumour"),
         "datasets.busi-malignant-mini.convert.annotation: unknown class 'tumour'"),
        (lambda p: p["datasets"]["us-liver-mini"]["convert"]["annotation"]["colors"].update(cyst=[1, 2, 3]),
         "unknown class 'cyst'"),
        (lambda p: p["datasets"]["chase-retina-mini"]["convert"].update(group_regex="Image_[LR]"),
         "needs a capture group"),
        (lambda p: p["datasets"]["aul"]["source"]["files"][0].update(md5="xyz"), "datasets.aul.source.files.0.md5"),
        (lambda p: p.update(active=["nope"]), "unknown dataset 'nope'"),
        (lambda p: p["datasets"]["synthetic"]["convert"].update(classes=["liver", "background"]),
         "classes[0] must be 'background'"),
        (lambda p: p["datasets"]["us-liver-mini"]["convert"].pop("layout"), "convert.layout: required"),
        (lambda p: p["augment"]["gamma"].update(limits=[1.5, 1.1]),
         "augment.gamma.limits: low (1.5) must not exceed high (1.1)"),
        (lambda p: p["augment"]["gamma"].update(limits=[0.0, 1.1]), "augment.gamma.limits.0: Input should be greater"),
        (lambda p: p["augment"]["shadow"].update(strength=[0.8, 0.2]), "augment.shadow.strength: low (0.8) must not"),
        (lambda p: p["augment"]["shadow"].update(strength=[0.5, 1.2]), "augment.shadow.strength.1: Input should be"),
        (lambda p: p["augment"]["speckle"].update(sigma=0.6), "augment.speckle.sigma:"),
        (lambda p: p["train"]["model"].update(first_kernel=4), "train.model.first_kernel: must be odd"),
        (lambda p: p["train"]["model"].update(norm="layer"), "train.model.norm: Input should be 'batch'"),
        (lambda p: p["train"]["model"].update(name="segformer"), "train.model.name: Input should be 'unet'"),
        (lambda p: p["train"].update(class_weights={"cyst": 2.0}), "train.class_weights: unknown class 'cyst'"),
        (lambda p: p["train"].update(class_weights={"liver": -1.0}), "train.class_weights:"),
        (lambda p: p["datasets"]["synthetic"].update(plan={"budget_minutes": 0}),
         "datasets.synthetic.plan.budget_minutes: Input should be greater than 0"),
        (lambda p: p["datasets"]["synthetic"].update(plan={"budget": 5}), "datasets.synthetic.plan.budget:"),
    ],
)
def test_bad_params_name_the_key(tmp_path, raw_params, edit, expected):
    data = copy.deepcopy(raw_params)
    edit(data)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data)
    assert expected in str(err.value)
    assert str(tmp_path / "params.yaml") in str(err.value)


def test_a_profile_plan_overrides_the_global_plan_for_its_dataset_alone(tmp_path, raw_params):
    data = copy.deepcopy(raw_params)
    data["datasets"]["synthetic"]["plan"] = {"budget_minutes": 3}
    params = _load(tmp_path, data)
    assert params.plan_for("synthetic").budget_minutes == 3
    assert params.plan_for("synthetic").reference_gflops == params.plan.reference_gflops
    assert params.plan_for("us-liver-mini") == params.plan
    assert params.plan_for("ircadb-liver-ct").budget_minutes == 6  # the shipped profile's own budget


def test_url_source_requires_a_checksum(tmp_path, raw_params):
    raw_params["datasets"]["aul"]["source"] = {"kind": "url", "files": [{"name": "a.zip", "url": "http://x/a.zip"}]}
    with pytest.raises(ConfigError, match="give md5 or sha256"):
        _load(tmp_path, raw_params)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("active: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_unquoted_on_and_off_mean_the_words(tmp_path):
    # YAML 1.1 reads them as booleans; the fields whose choices are words take the word written.
    text = (REPO / "params.yaml").read_text()
    text = text.replace("    flip_tta: validation", "    flip_tta: off", 1).replace(
        "    largest_component: validation", "    largest_component: on", 1).replace('method: "off"', "method: off", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    post = params.train.postprocess
    assert (post.flip_tta, post.largest_component, params.train.semi_supervised.method) == ("off", "on", "off")
    path.write_text(text.replace("method: off", "method: on", 1))
    with pytest.raises(ConfigError, match="semi_supervised.method"):  # no method is called "on"
        load_params(path)
