"""Heads of OMSF2: the multi-scale feature-fusion (MSFF) classifier and the MAG-SD BAP branch.

MSFF fuses a low (fine, stride-4) level, which carries the small opacities, with high levels
re-weighted by channel attention, then pools globally. Average pooling measures profusion
(how dense the opacities are); max pooling keeps rare large opacities; both are concatenated.

BAP (bilinear attention pooling; Hu et al., WS-DAN, 2019, as used by Li et al., MAG-SD, 2021)
pools features under M attention maps, applies a signed square root and L2 normalisation, and
classifies; its attention maps also drive the attention-guided augmentation in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omsf2.models.neck import ConvBNAct, resize_to


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al., SE-Net): (N, C, H, W) -> same shape, channels re-weighted."""

    def __init__(self, ch: int, reduction: int = 4) -> None:
        super().__init__()
        mid = max(8, ch // reduction)
        self.fc1 = nn.Conv2d(ch, mid, 1)
        self.fc2 = nn.Conv2d(mid, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class MSFFHead(nn.Module):
    """Multi-scale feature fusion head over P2-P4.

    low = conv3x3 stride 2 on P2 (P3's size at a quarter of the cost of convolving at stride 4
    and pooling); high = SE(conv3x3(P3) + up(conv3x3(P4))); the
    concatenation is mixed by a 1x1 conv, globally pooled (avg ++ max), dropped out and classified.
    """

    def __init__(self, in_ch: int, ch: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.low = ConvBNAct(in_ch, ch, 3, stride=2)
        self.mid = ConvBNAct(in_ch, ch, 3)
        self.high = ConvBNAct(in_ch, ch, 3)
        self.se = SqueezeExcite(ch)
        self.mix = ConvBNAct(2 * ch, ch, 1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * ch, num_classes)
        self.num_features = 2 * ch

    def forward_features(self, p: list[Tensor]) -> Tensor:
        """Pooled fused features.

        Args:
            p: neck levels [P2, P3, P4, P5], each (N, in_ch, H_l, W_l).

        Returns:
            (N, 2 * ch) pooled features (average ++ max).
        """
        p2, p3, p4 = p[0], p[1], p[2]
        size = p3.shape[-2:]
        low = resize_to(self.low(p2), size)
        high = self.se(self.mid(p3) + F.interpolate(self.high(p4), size=size, mode="nearest"))
        x = self.mix(torch.cat([low, high], dim=1))
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    def forward(self, feats: Tensor) -> Tensor:
        """(N, 2 * ch) pooled features -> (N, num_classes) logits."""
        return self.fc(self.drop(feats))


class GAPHead(nn.Module):
    """The MSFF head switched off, and the plain ResNet's head: global average pooling of one level + linear.

    Args:
        in_ch: channels of the pooled level.
        num_classes: logits.
        dropout: before the classifier.
        level: which of the levels it is given to pool (0 = finest, -1 = deepest).
    """

    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.2, level: int = 0) -> None:
        super().__init__()
        self.level = level
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_features = in_ch

    def forward_features(self, p: list[Tensor]) -> Tensor:
        """Levels [L2, ..., L5] -> (N, in_ch) average of level ``level``."""
        return p[self.level].mean(dim=(2, 3))

    def forward(self, feats: Tensor) -> Tensor:
        """(N, in_ch) pooled features -> (N, num_classes) logits."""
        return self.fc(self.drop(feats))


def bilinear_attention_pool(features: Tensor, attention: Tensor, eps: float = 1e-6) -> Tensor:
    """BAP: attention-weighted feature averages, signed square root, L2 normalisation.

    Args:
        features: (N, C, H, W).
        attention: (N, M, H, W), non-negative.
        eps: keeps the square root's gradient and the normalisation finite.

    Returns:
        (N, M * C) normalised feature matrix, flattened.
    """
    n, c, h, w = features.shape
    m = attention.shape[1]
    fm = torch.einsum("nmhw,nchw->nmc", attention, features) / float(h * w)
    fm = torch.sign(fm) * torch.sqrt(fm.abs() + eps)
    return F.normalize(fm.reshape(n, m * c), dim=1)


class BAPHead(nn.Module):
    """MAG-SD branch: M attention maps from C4 and C5, bilinear attention pooling, a linear head."""

    # WS-DAN scales the unit-norm BAP vector before the classifier so logits can reach useful
    # magnitudes without huge weights.
    scale = 100.0

    def __init__(self, c4: int, c5: int, ch: int, maps: int, num_classes: int) -> None:
        super().__init__()
        self.reduce = ConvBNAct(c4 + c5, ch, 1)
        self.att = ConvBNAct(ch, maps, 1)
        self.fc = nn.Linear(maps * ch, num_classes)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, c4: Tensor, c5: Tensor) -> tuple[Tensor, Tensor]:
        """Classify from C4/C5.

        Args:
            c4: (N, c4, H/16, W/16) backbone level.
            c5: (N, c5, H/32, W/32) backbone level.

        Returns:
            (logits (N, num_classes), attention maps (N, maps, H/16, W/16), non-negative).
        """
        f = self.reduce(torch.cat([c4, F.interpolate(c5, size=c4.shape[-2:], mode="nearest")], dim=1))
        att = self.att(f)
        return self.fc(bilinear_attention_pool(f, att) * self.scale), att
