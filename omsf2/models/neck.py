"""SSPNet-style neck of OMSF2: dense multi-scale pooling, DPPM context, CAM heat maps, scale fusion.

Hong et al., "SSPNet: Scale Selection Pyramid Network for Tiny Person Detection from UAV Images"
(2021) gives the context-aware attention module (CAM), scale enhancement ``(1 + A_l) * L_l`` and
top-down scale selection ``A_l * up(A_{l+1}) * up(L_{l+1})`` ("cross-layer gradient
consistency": a finer level only takes from the coarser one where both attend). OMSF2 uses them
so that tiny, diffuse opacities keep a path to the classifier through the stride-4 level.

The two memory-bound steps, dense multi-scale pooling and scale fusion, go through
``omsf2.kernels`` so the fused kernels replace them without touching this file.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omsf2.kernels import multiscale_pool, scale_fuse


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm -> ReLU; the neck's building block."""

    def __init__(
        self, in_ch: int, out_ch: int, k: int = 1, dilation: int = 1, act: bool = True, stride: int = 1
    ) -> None:
        pad = dilation * (k - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SPP(nn.Module):
    """Dense multi-scale pooling (``omsf2.kernels.multiscale_pool``) followed by a 1x1 projection.

    (N, C, H, W) -> concat[x, pool5, pool9, pool13] (N, 4C, H, W) -> (N, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, windows: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        self.windows = tuple(windows)
        self.proj = ConvBNAct(in_ch * (1 + len(self.windows)), out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W)."""
        return self.proj(multiscale_pool(x, self.windows, "max"))


class DPPM(nn.Module):
    """Dilated pyramid pooling module: global context for the deepest level.

    Four parallel branches of ``ch // 4`` channels: 1x1; 3x3 dilation 2; 3x3 dilation 5; global
    average pooling -> 1x1 broadcast back to (H, W). They are concatenated, projected by a 1x1
    conv and added to the input (a residual keeps the block an identity at initialisation).
    """

    def __init__(self, ch: int) -> None:
        super().__init__()
        b = max(8, ch // 4)
        self.b1 = ConvBNAct(ch, b, 1)
        self.b2 = ConvBNAct(ch, b, 3, dilation=2)
        self.b5 = ConvBNAct(ch, b, 3, dilation=5)
        self.gp = ConvBNAct(ch, b, 1)
        self.proj = ConvBNAct(4 * b, ch, 1, act=False)
        bn = self.proj[1]
        if isinstance(bn, nn.BatchNorm2d):  # zero-init the residual branch: identity at start
            nn.init.zeros_(bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        # expand (not interpolate) broadcasts the 1x1 global branch: exact, and a no-op in ONNX terms.
        g = self.gp(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, x.shape[2], x.shape[3])
        y = torch.cat([self.b1(x), self.b2(x), self.b5(x), g], dim=1)
        return F.relu(x + self.proj(y))


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Resize (N, C, h, w) to ``size``: exact average pooling when ``size`` divides (h, w), else bilinear.

    Downsampling heat maps by averaging keeps their meaning (the fraction of the cell that
    attends); bilinear is the fallback for sizes that do not divide.
    """
    h, w = x.shape[-2:]
    th, tw = int(size[0]), int(size[1])
    if (h, w) == (th, tw):
        return x
    if th <= h and tw <= w and h % th == 0 and w % tw == 0 and h // th == w // tw:
        return F.avg_pool2d(x, kernel_size=h // th)
    return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)


class CAM(nn.Module):
    """Context-aware attention module: one sigmoid heat map per level from all levels at P2 size.

    The levels are concatenated at the finest resolution so that each level's map sees both fine
    detail and context; the logits of all four maps come from one small conv stack.
    """

    def __init__(self, ch: int, levels: int = 4) -> None:
        super().__init__()
        mid = max(8, ch // 2)
        self.reduce = ConvBNAct(ch * levels, mid, 1)
        self.mix = ConvBNAct(mid, mid, 3)
        self.out = nn.Conv2d(mid, levels, 1)
        # Start near A = 0.5 everywhere; the maps then sharpen from the classification signal.
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """Heat maps for every level.

        Args:
            feats: levels (L2, L3, L4, L5), each (N, ch, H_l, W_l), finest first.

        Returns:
            Sigmoid maps of shape (N, levels, H_2, W_2).
        """
        size = feats[0].shape[-2:]
        up = [feats[0]] + [F.interpolate(f, size=size, mode="nearest") for f in feats[1:]]
        return torch.sigmoid(self.out(self.mix(self.reduce(torch.cat(up, dim=1)))))


class SSPNeck(nn.Module):
    """Neck: laterals, SPP + DPPM on C5, CAM heat maps, scale enhancement and top-down selection.

    Top-down, per level l = 4, 3, 2 with ``P'_5 = (1 + A_5) L_5``:
    ``P'_l = (1 + A_l) L_l + A_l * up(A_{l+1}) * up(P'_{l+1})`` (``scale_fuse``), then a 3x3
    output conv per level. The coarser input is the already-fused ``P'_{l+1}``, so evidence from
    every coarser level reaches P2, as in FPN's top-down pathway.
    """

    def __init__(self, in_channels: Sequence[int], ch: int, pool_windows: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        c2, c3, c4, c5 = in_channels
        self.lat2 = ConvBNAct(c2, ch, 1)
        self.lat3 = ConvBNAct(c3, ch, 1)
        self.lat4 = ConvBNAct(c4, ch, 1)
        self.spp = SPP(c5, ch, pool_windows)
        self.dppm = DPPM(ch)
        self.cam = CAM(ch, levels=4)
        self.out = nn.ModuleList([ConvBNAct(ch, ch, 3) for _ in range(4)])
        self.channels = ch

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Fuse the backbone levels.

        Args:
            feats: (C2, C3, C4, C5) from the backbone.

        Returns:
            ``([P2, P3, P4, P5], A)``: P_l of shape (N, ch, H_l, W_l) and the CAM maps A of shape
            (N, 4, H_2, W_2) (channel l-2 is level l's map at P2 resolution).
        """
        c2, c3, c4, c5 = feats
        lat = [self.lat2(c2), self.lat3(c3), self.lat4(c4), self.dppm(self.spp(c5))]
        cam = self.cam(lat)
        att = [resize_to(cam[:, i : i + 1], lat[i].shape[-2:]) for i in range(4)]
        fused: list[Tensor] = [lat[3] * (1 + att[3])]
        for i in (2, 1, 0):
            fused.insert(0, scale_fuse(lat[i], att[i], fused[0], att[i + 1]))
        return [conv(p) for conv, p in zip(self.out, fused, strict=True)], cam


class LateralNeck(nn.Module):
    """The neck switched off, for ablation: 1x1 projections of C2-C5 to one width, nothing fused.

    The heads need levels of one width; these laterals are the least that gives it, so that a
    comparison with :class:`SSPNeck` measures SPP, DPPM, the CAM maps and the scale fusion.
    """

    def __init__(self, in_channels: Sequence[int], ch: int) -> None:
        super().__init__()
        self.lat = nn.ModuleList([ConvBNAct(c, ch, 1) for c in in_channels])
        self.channels = ch

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """(C2, C3, C4, C5) -> [L2, L3, L4, L5], each (N, ch, H_l, W_l)."""
        return [lat(f) for lat, f in zip(self.lat, feats, strict=True)]
