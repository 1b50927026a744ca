"""Training augmentation on batches: radiograph-safe geometry and intensity, and attention-guided views.

Everything runs on batched tensors in the training process and draws from one explicit
``torch.Generator`` (CPU), so a resumed run replays the same augmentations. The data pipeline
itself stays deterministic.

Attention-guided ("data-specificity") augmentation uses the model's own attention maps (BAP maps,
or CAM maps without the BAP branch). Per sample one map is drawn, weighted by its mean
activation as in WS-DAN, normalised to [0, 1] and upsampled to the image:

- ``crop`` (WS-DAN): the box where the map exceeds theta in [0.4, 0.6], with a 10 % margin,
  resized to the full image: a zoom on what the model attends.
- ``drop`` (WS-DAN): the region above theta in [0.2, 0.5] is erased (set to the image mean), so
  the model must find evidence elsewhere.
- ``mixup`` (MAG-SD): the image blended with its own attention crop, lambda in [0.4, 0.6]: one
  view holding two scales of the same evidence.
- ``dim`` (MAG-SD): the attended region is attenuated towards the mean by beta in [0.3, 0.7]:
  a soft drop.
- ``patch`` (MAG-SD): the image is cut into a 4 x 4 grid and the patches are shuffled, except
  that the most-attended patch keeps its place: local texture (where small opacities live)
  survives, global layout does not.

The trade-off: these views can remove some of the evidence that sets a stage, which is why the
loop ties their predictions to the raw view's with a soft distance rather than trusting only
the hard label.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from omsf2.config import AugName, parse_enum


@dataclasses.dataclass(frozen=True)
class AugConfig:
    """Augmentation settings.

    Attributes:
        attention: attention-guided views to draw from (empty = none).
        attention_prob: probability per step of adding one attention-guided view.
        rotate: max rotation in degrees.
        scale: max relative zoom (0.1 = 0.9..1.1).
        translate: max shift as a fraction of the image size.
        flip: probability of a horizontal flip. Off by default: it mirrors the heart, an
            anatomy the model never sees at inference.
        intensity: random gamma, contrast and brightness (exposure variation).
        noise: max standard deviation of added Gaussian noise, in [0, 1] image units.
    """

    attention: tuple[AugName, ...] = tuple(AugName)
    attention_prob: float = 0.5
    rotate: float = 7.0
    scale: float = 0.1
    translate: float = 0.05
    flip: float = 0.0
    intensity: bool = True
    noise: float = 0.02

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention", tuple(parse_enum(AugName, a, "augmentation") for a in self.attention))
        if not 0.0 <= self.attention_prob <= 1.0 or not 0.0 <= self.flip <= 1.0:
            raise ValueError("attention_prob and flip are probabilities in [0, 1]")
        if self.rotate < 0 or not 0 <= self.scale < 1 or not 0 <= self.translate < 0.5 or self.noise < 0:
            raise ValueError("rotate, scale, translate and noise must be non-negative (scale < 1, translate < 0.5)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["attention"] = [a.value for a in self.attention]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "attention": tuple(d.get("attention", ()))})


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64).float() * (hi - lo) + lo


def geometric(x: Tensor, cfg: AugConfig, g: torch.Generator) -> Tensor:
    """Random small rotation, zoom, shift (and optional flip), per sample.

    Args:
        x: (N, C, H, W) normalised images.
        cfg: settings.
        g: CPU generator.

    Returns:
        (N, C, H, W); areas moved in from outside take the border value.
    """
    n = x.shape[0]
    ang = _u(g, n, -cfg.rotate, cfg.rotate) * math.pi / 180
    s = 1.0 / _u(g, n, 1 - cfg.scale, 1 + cfg.scale)
    tx = _u(g, n, -cfg.translate, cfg.translate) * 2
    ty = _u(g, n, -cfg.translate, cfg.translate) * 2
    flip = torch.where(torch.rand(n, generator=g) < cfg.flip, -1.0, 1.0)
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1).to(
        x.device, x.dtype
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def intensity(x: Tensor, mean: Tensor, std: Tensor, cfg: AugConfig, g: torch.Generator) -> Tensor:
    """Exposure variation in [0, 1] image space: gamma, contrast, brightness, noise.

    Args:
        x: (N, C, H, W) normalised images.
        mean: (C,) normalisation mean.
        std: (C,) normalisation divisor.
        cfg: settings.
        g: CPU generator.
    """
    n = x.shape[0]
    dev = x.device
    m = mean.view(1, -1, 1, 1).to(dev, x.dtype)
    sd = std.view(1, -1, 1, 1).to(dev, x.dtype)
    v = (x * sd + m).clamp(0, 1)
    if cfg.intensity:
        gamma = torch.exp(_u(g, n, -0.2, 0.2)).view(n, 1, 1, 1).to(dev, x.dtype)
        gain = _u(g, n, 0.9, 1.1).view(n, 1, 1, 1).to(dev, x.dtype)
        bias = _u(g, n, -0.05, 0.05).view(n, 1, 1, 1).to(dev, x.dtype)
        v = (v.clamp_min(1e-6) ** gamma) * gain + bias
    if cfg.noise > 0:
        sigma = _u(g, n, 0, cfg.noise).view(n, 1, 1, 1).to(dev, x.dtype)
        v = v + torch.randn(x.shape, generator=g).to(dev, x.dtype) * sigma
    return (v.clamp(0, 1) - m) / sd


def pick_attention(att: Tensor, size: tuple[int, int], g: torch.Generator) -> Tensor:
    """One attention map per sample, drawn in proportion to its mean activation, in [0, 1].

    Args:
        att: (N, M, h, w) non-negative maps.
        size: (H, W) to upsample to.
        g: CPU generator.

    Returns:
        (N, 1, H, W) maps, each divided by its max.
    """
    att = att.detach().float().clamp_min(0)
    n = att.shape[0]
    w = att.mean(dim=(2, 3)).cpu().double() + 1e-12
    k = torch.multinomial(w / w.sum(1, keepdim=True), 1, generator=g).squeeze(1).to(att.device)
    a = att[torch.arange(n, device=att.device), k].unsqueeze(1)
    a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    return a / a.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)


def _boxes(a: Tensor, theta: list[float]) -> list[tuple[int, int, int, int]]:
    n, _, h, w = a.shape
    out = []
    for i in range(n):
        ys, xs = torch.nonzero(a[i, 0] >= theta[i], as_tuple=True)
        if len(ys) == 0:
            out.append((0, h, 0, w))
            continue
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        my, mx = int(0.1 * h), int(0.1 * w)
        out.append((max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx)))
    return out


def attention_crop(x: Tensor, a: Tensor, g: torch.Generator) -> Tensor:
    """WS-DAN crop: zoom on the box where ``a`` >= theta (theta ~ U(0.4, 0.6)). x: (N, C, H, W), a: (N, 1, H, W)."""
    h, w = x.shape[-2:]
    theta = _u(g, x.shape[0], 0.4, 0.6).tolist()
    crops = [
        F.interpolate(x[i : i + 1, :, y0:y1, x0:x1], size=(h, w), mode="bilinear", align_corners=False)
        for i, (y0, y1, x0, x1) in enumerate(_boxes(a, theta))
    ]
    return torch.cat(crops, 0)


def apply_attention_aug(name: AugName, x: Tensor, att: Tensor, g: torch.Generator) -> Tensor:
    """One attention-guided view of a batch.

    Args:
        name: which view.
        x: (N, C, H, W) normalised images.
        att: (N, M, h, w) attention maps of the raw forward pass (detached here).
        g: CPU generator.

    Returns:
        (N, C, H, W) augmented images.
    """
    n = x.shape[0]
    h, w = x.shape[-2:]
    a = pick_attention(att, (h, w), g)
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    if name is AugName.CROP:
        return attention_crop(x, a, g)
    if name is AugName.DROP:
        theta = _u(g, n, 0.2, 0.5).view(n, 1, 1, 1).to(x.device)
        keep = (a < theta).to(x.dtype)
        return x * keep + fill * (1 - keep)
    if name is AugName.MIXUP:
        lam = _u(g, n, 0.4, 0.6).view(n, 1, 1, 1).to(x.device, x.dtype)
        return lam * x + (1 - lam) * attention_crop(x, a, g)
    if name is AugName.DIM:
        beta = _u(g, n, 0.3, 0.7).view(n, 1, 1, 1).to(x.device, x.dtype)
        return x - beta * a.to(x.dtype) * (x - fill)
    if name is AugName.PATCH:
        return _patch_shuffle(x, a, g)
    raise ValueError(f"unknown augmentation {name!r}; choose one of {[m.value for m in AugName]}")


def _patch_shuffle(x: Tensor, a: Tensor, g: torch.Generator, grid: int = 4) -> Tensor:
    n, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    core = x[:, :, : ph * grid, : pw * grid]
    # (N, C, grid, ph, grid, pw) -> (N, grid*grid, C, ph, pw)
    tiles = core.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, ph, pw)
    score = F.adaptive_avg_pool2d(a[:, :, : ph * grid, : pw * grid], grid).reshape(n, grid * grid)
    out = x.clone()
    shuffled = []
    for i in range(n):
        keep = int(score[i].argmax())
        perm = torch.randperm(grid * grid, generator=g)
        # Put the kept tile back where it was: swap it with whatever landed there.
        j = int((perm == keep).nonzero()[0])
        perm[j], perm[keep] = perm[keep].clone(), perm[j].clone()
        shuffled.append(tiles[i, perm.to(x.device)])
    t = torch.stack(shuffled, 0).reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    out[:, :, : ph * grid, : pw * grid] = t.reshape(n, c, ph * grid, pw * grid)
    return out


@contextlib.contextmanager
def frozen_bn_stats(model: torch.nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics but do not update their running ones.

    Attention-guided views (zoomed crops, erased regions) are not what the model sees at
    inference; letting them into the running statistics made validation swing wildly between
    epochs. Momentum 0 keeps ``running = (1 - 0) * running``.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
