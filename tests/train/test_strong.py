"""The strong view of unlabelled images: seeded, image-only, a shadow darkens a wedge, values stay in [0, 1]."""
from __future__ import annotations

import torch

from medseg.config import StrongView
from medseg.train.strong import strong_view


def off(**on) -> StrongView:
    """Every perturbation off but those given."""
    base = {"shadow": {"p": 0.0}, "speckle": {"p": 0.0}, "gain": {"p": 0.0}, "gamma": {"p": 0.0}}
    return StrongView(**{**base, **on})


def grey(n: int = 4, size: tuple[int, int] = (48, 64), value: float = 0.6) -> torch.Tensor:
    return torch.full((n, 1, *size), value)


def test_the_same_generator_state_gives_the_same_view_and_another_seed_another():
    x = torch.rand(3, 1, 32, 40, generator=torch.Generator().manual_seed(0))
    cfg = StrongView()
    a = strong_view(x, cfg, torch.Generator().manual_seed(5))
    b = strong_view(x, cfg, torch.Generator().manual_seed(5))
    c = strong_view(x, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_a_shadow_darkens_a_widening_band_below_its_reflector_and_nothing_above():
    x = grey()
    out = strong_view(x, off(shadow={"p": 1.0, "max_width": 0.3, "strength": (0.8, 0.8)}),
                      torch.Generator().manual_seed(1))
    assert (out <= x + 1e-6).all()  # a shadow only darkens
    for sample in out[:, 0]:
        dark = sample < 0.6 - 1e-4
        rows = torch.nonzero(dark.any(dim=1)).flatten()
        assert len(rows) and int(rows.max()) == sample.shape[0] - 1  # it reaches the bottom of the image
        assert not dark[: int(rows.min())].any()  # above the reflector nothing changes
        widths = dark.sum(dim=1)[rows]
        assert widths[-1] >= widths[len(widths) // 2] > 0  # the band widens with depth, like the fan
        assert float(sample.min()) < 0.6 * 0.3  # its core is darkened by the drawn 0.8


def test_the_view_is_image_only_black_stays_black_and_values_stay_in_range():
    x = grey(value=0.9)
    x[:, :, :, :8] = 0.0  # outside the scanner's sector
    cfg = off(speckle={"p": 1.0, "sigma": 0.5}, gain={"p": 1.0, "brightness": 1.0, "contrast": 1.0},
              gamma={"p": 1.0, "limits": (0.2, 5.0)})
    out = strong_view(x, cfg, torch.Generator().manual_seed(2))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert (out[:, :, :, :8] == 0).all()  # nothing moved into the black border
    assert not torch.equal(out[:, :, :, 8:], x[:, :, :, 8:])


def test_every_perturbation_off_leaves_the_image_as_it_was():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(strong_view(x, off(), torch.Generator().manual_seed(4)), x)
