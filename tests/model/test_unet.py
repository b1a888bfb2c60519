"""Networks: every model takes any H, W and returns logits of that size; bad options fail fast."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medseg.config import MODEL_NAMES, ModelConfig
from medseg.model.checkpoint import load_checkpoint, save_checkpoint
from medseg.model.factory import build_model
from medseg.model.unet import OutConv, Stem, UNet, kernel_sizes, norm_layer

# Narrow networks keep the tests fast on 2 CPU cores; depth 4 because BasicUNet requires it;
# no stem because only our U-Net has one.
SMALL = {"base_filters": 4, "depth": 4, "stem_stride": 1}
ODD_AND_SQUARE = [(1, 1, 97, 131), (2, 3, 64, 64)]


def _small(name: str, **knobs: object) -> ModelConfig:
    return ModelConfig(name=name, **{**SMALL, **knobs})


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", ODD_AND_SQUARE)
def test_logits_have_the_input_size(name: str, shape: tuple[int, int, int, int]) -> None:
    n, c, h, w = shape
    model = build_model(_small(name), in_channels=c, num_classes=4).eval()
    with torch.no_grad():
        logits = model(torch.randn(shape))
    assert logits.shape == (n, 4, h, w)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "knobs",
    [
        {"first_kernel": 7},
        {"dilation": 2},
        {"dropout": 0.3},
        {"norm": "instance"},
        {"norm": "group", "base_filters": 6},  # 6 channels: groups must still divide them
        {"norm": "none"},
        {"depth": 1},
        {"depth": 5},
        {"stem_stride": 2},
        {"stem_stride": 4, "depth": 3, "base_filters": 8},
        {"stem_stride": 4, "first_kernel": 5, "dilation": 2},
    ],
)
def test_unet_knobs_keep_odd_sizes_working(knobs: dict[str, object]) -> None:
    model = build_model(_small("unet", **knobs), in_channels=1, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 97, 131)).shape == (1, 3, 97, 131)


def test_first_kernel_shrinks_with_depth() -> None:
    assert kernel_sizes(7, 4) == [7, 5, 3, 3, 3]
    model = UNet(ModelConfig(base_filters=16, first_kernel=7, depth=4, stem_stride=1), 1, 2)
    assert model.inc[0].kernel_size == (7, 7)
    assert model.downs[0][1][0].kernel_size == (5, 5)
    assert model.downs[1][1][0].kernel_size == (3, 3)


def test_dropout_only_in_the_deeper_half() -> None:
    model = UNet(ModelConfig(base_filters=16, dropout=0.5, depth=4, stem_stride=1), 1, 2)
    has_dropout = [any(isinstance(m, nn.Dropout2d) for m in block.modules()) for block in (model.inc, *model.downs)]
    assert has_dropout == [False, False, False, True, True]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_construction_is_deterministic_under_a_seed(name: str) -> None:
    torch.manual_seed(0)
    first = build_model(_small(name), 1, 3).state_dict()
    torch.manual_seed(0)
    second = build_model(_small(name), 1, 3).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = build_model(_small(name), in_channels=1, num_classes=3).train()
    logits = model(torch.randn(2, 1, 45, 61))
    F.cross_entropy(logits, torch.randint(0, 3, (2, 45, 61))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channels_last_gives_the_same_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(_small(name), in_channels=1, num_classes=3).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        logits = model(x.to(memory_format=torch.channels_last))
    assert logits.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("knobs", "option"),
    [
        ({"first_kernel": 4}, "first_kernel"),
        ({"first_kernel": 1}, "first_kernel"),
        ({"depth": 0}, "depth"),
        ({"base_filters": 0}, "base_filters"),
        ({"dilation": 0}, "dilation"),
        ({"dropout": 1.0}, "dropout"),
        ({"norm": "layer"}, "norm"),
        ({"stem_stride": 3}, "stem_stride"),
        ({"stem_stride": 0}, "stem_stride"),
    ],
)
def test_bad_knob_names_the_option(knobs: dict[str, object], option: str) -> None:
    with pytest.raises(ValueError, match=option):
        ModelConfig(**knobs)


def test_unknown_norm_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="'batch', 'instance', 'group' or 'none'"):
        ModelConfig(norm="layer")
    with pytest.raises(ValueError, match="batch, instance, group, none"):
        norm_layer("layer", 8)


def test_unknown_model_lists_supported_names() -> None:
    with pytest.raises(ValueError) as info:
        ModelConfig(name="segformer")
    assert all(name in str(info.value) for name in MODEL_NAMES)
    with pytest.raises(KeyError) as info:  # a config that skipped validation
        build_model(ModelConfig.model_construct(name="segformer", **SMALL), 1, 2)
    assert all(name in str(info.value) for name in MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "knobs", "option"),
    [
        ("monai_unet", {"first_kernel": 7}, "first_kernel"),
        ("monai_unet", {"dilation": 2}, "dilation"),
        ("monai_basicunet", {"depth": 3}, "depth"),
        ("monai_dynunet", {"norm": "none"}, "norm"),
        ("monai_unet", {"stem_stride": 2}, "stem_stride"),
        ("monai_basicunet", {"stem_stride": 4}, "stem_stride"),
        ("monai_dynunet", {"stem_stride": 2}, "stem_stride"),
    ],
)
def test_knob_a_monai_net_lacks_is_refused(name: str, knobs: dict[str, object], option: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: {option}"):
        build_model(_small(name, **knobs), 1, 2)


@pytest.mark.parametrize("stride", [2, 4])
def test_stem_folds_patches_and_the_head_unfolds_them(stride: int) -> None:
    model = UNet(ModelConfig(base_filters=8, depth=2, stem_stride=stride), in_channels=3, num_classes=5)
    assert model.multiple == stride * 4  # pad to stem * 2**depth
    assert model.inc[0].in_channels == 3 * stride**2  # space-to-depth keeps every input pixel
    assert model.outc.out_channels == 5 * stride**2  # one logit per class and position in the patch
    x = torch.randn(1, 3, 40, 56)
    assert model.stem(x).shape == (1, 3 * stride**2, 40 // stride, 56 // stride)


def test_stem_does_less_compute_at_the_same_widths() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    def flops(stride: int) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            UNet(ModelConfig(base_filters=8, depth=3, stem_stride=stride), 1, 2).eval()(torch.randn(1, 1, 128, 128))
        return counter.get_total_flops()

    assert flops(2) < flops(1) / 3.5  # the convolutions run on a quarter of the pixels
    assert flops(4) < flops(2) / 3.5


@pytest.mark.parametrize("stride", [2, 4])
def test_head_unfolds_in_the_order_the_stem_folds(stride: int) -> None:
    """With identity weights the head exactly inverts the stem: each logit lands on its own pixel."""
    head = OutConv(stride**2, num_classes=1, scale=stride)
    with torch.no_grad():
        head.weight.copy_(torch.eye(stride**2)[:, :, None, None])
        head.bias.zero_()
        x = torch.randn(2, 1, 8 * stride, 3 * stride)
        torch.testing.assert_close(head(Stem(stride)(x)), x)


def test_config_round_trips_through_json() -> None:
    cfg = ModelConfig(name="monai_dynunet", base_filters=8, depth=3, first_kernel=5, dropout=0.2, norm="group",
                      stem_stride=1)
    assert ModelConfig.model_validate(json.loads(json.dumps(cfg.model_dump()))) == cfg
    assert ModelConfig.model_validate({"name": "unet"}) == ModelConfig()


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="width"):
        ModelConfig.model_validate({"name": "unet", "width": 3})


@pytest.mark.parametrize("stride", [1, 4])
def test_checkpoint_rebuilds_the_same_network(tmp_path, stride: int) -> None:
    cfg = _small("unet", first_kernel=5, stem_stride=stride)
    model = build_model(cfg, 1, 3).eval()
    save_checkpoint(tmp_path / "model.pt", model.state_dict(), cfg, ["background", "a", "b"], 1, (32, 40), {})
    rebuilt = load_checkpoint(tmp_path / "model.pt")
    assert rebuilt.config == cfg and rebuilt.size == (32, 40)
    x = torch.randn(1, 1, 33, 40)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.model(x), model(x))
