"""Augmentations: shapes, determinism under a generator, and what each view keeps."""

from __future__ import annotations

import pytest
import torch

from omsf2.config import AugName
from omsf2.train.augment import AugConfig, apply_attention_aug, geometric, intensity, pick_attention


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 32, 32, generator=g)
    att = torch.zeros(3, 4, 8, 8)
    att[:, 2, 1:3, 5:7] = 1.0  # one map attends to the top-right
    return x, att


@pytest.mark.parametrize("name", list(AugName))
def test_attention_views_are_deterministic(name: AugName) -> None:
    x, att = _batch()
    a = apply_attention_aug(name, x, att, torch.Generator().manual_seed(5))
    b = apply_attention_aug(name, x, att, torch.Generator().manual_seed(5))
    assert a.shape == x.shape
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, x)


def test_pick_attention_draws_active_maps_only() -> None:
    _, att = _batch()
    a = pick_attention(att, (32, 32), torch.Generator().manual_seed(0))
    assert a.shape == (3, 1, 32, 32)
    assert float(a.amax()) == pytest.approx(1.0)
    assert float(a[:, :, 24:, :8].abs().max()) == 0.0  # the bottom-left is never attended


def test_drop_erases_the_attended_region_and_crop_zooms_on_it() -> None:
    x, att = _batch()
    d = apply_attention_aug(AugName.DROP, x, att, torch.Generator().manual_seed(1))
    fill = x.mean(dim=(1, 2, 3))
    # Attended region (top right, rows 4..12, cols 20..28) is set to the image mean.
    torch.testing.assert_close(d[:, 0, 6, 24], fill)
    torch.testing.assert_close(d[:, :, 28:, :4], x[:, :, 28:, :4])
    c = apply_attention_aug(AugName.CROP, x, att, torch.Generator().manual_seed(1))
    assert not torch.allclose(c, x)


def test_patch_keeps_the_most_attended_tile() -> None:
    x, att = _batch()
    p = apply_attention_aug(AugName.PATCH, x, att, torch.Generator().manual_seed(2))
    # 4x4 grid of 8x8 tiles; the attended one is row 0, col 2 (pixels 0..8 x 16..24) or its neighbour.
    assert torch.equal(p[:, :, 0:8, 16:24], x[:, :, 0:8, 16:24]) or torch.equal(
        p[:, :, 0:8, 24:32], x[:, :, 0:8, 24:32]
    )
    assert sorted(p.flatten().tolist()) == sorted(x.flatten().tolist())  # a permutation of tiles


def test_geometric_identity_and_intensity_noop() -> None:
    x, _ = _batch()
    cfg = AugConfig(rotate=0, scale=0, translate=0, flip=0, intensity=False, noise=0)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(geometric(x, cfg, g), x, atol=1e-5, rtol=0)
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    xc = x.clamp(-2, 2)  # inside [0, 1] after de-normalisation
    torch.testing.assert_close(intensity(xc, mean, std, cfg, g), xc, atol=1e-5, rtol=0)
    flipped = geometric(x, AugConfig(rotate=0, scale=0, translate=0, flip=1.0), g)
    torch.testing.assert_close(flipped, x.flip(3), atol=1e-5, rtol=0)


def test_intensity_stays_in_image_range() -> None:
    x, _ = _batch()
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    y = intensity(x, mean, std, AugConfig(noise=0.05), torch.Generator().manual_seed(0))
    v = y * 0.25 + 0.5
    assert float(v.min()) >= -1e-6 and float(v.max()) <= 1 + 1e-6
