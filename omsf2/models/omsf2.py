"""OMSF2: multi-scale feature fusion for pneumoconiosis staging on chest radiographs.

ResNet C2-C5 -> SSPNet-style neck (SPP + DPPM on C5, CAM heat maps, scale enhancement and
top-down scale selection) -> MSFF head; optionally the MAG-SD bilinear-attention-pooling branch,
whose logits are averaged with MSFF's and whose attention maps drive the attention-guided
augmentation in training. Inference returns ``(logits, heatmap)``: the heat map is the mean of
the four CAM maps at stride 4, shape (N, 1, H/4, W/4), values in [0, 1].

Ablation and baseline variants come from the same class through :class:`ModelConfig` flags, so
``omsf2 train``, export, eval and predict treat them alike: the neck can be reduced to 1x1
laterals (``neck="lateral"``: no SPP, DPPM, CAM or scale fusion) or removed (``neck="none"``),
and the MSFF head replaced by global average pooling + linear (``head="gap"``; it pools P2, which
the top-down fusion fed from every level, or C5 when there is no neck). The plain ResNet
baselines are ``neck="none", head="gap", bap=False``: the torchvision ResNet classifier at the
same width and depth. A variant without CAM maps returns as heat map an activation map: the
channel mean of its stride-4 level, scaled to [0, 1] per image (where the network responds, not
a learned attention); without CAM maps or BAP it has no attention maps, and training then adds
no attention-guided view (nor the soft distance that compares it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from torch import Tensor, nn

from omsf2.config import HeadName, ModelConfig, NeckName
from omsf2.models.backbone import ResNetBackbone
from omsf2.models.heads import BAPHead, GAPHead, MSFFHead
from omsf2.models.neck import LateralNeck, SSPNeck
from omsf2.models.registry import register_model


class ModelOutput(NamedTuple):
    """Everything training needs from one forward pass.

    Attributes:
        logits: (N, num_classes).
        heatmap: (N, 1, H/4, W/4) in [0, 1].
        attention: (N, M, h, w) non-negative attention maps for augmentation: the BAP maps
            (stride 16) when the branch is built, else the four CAM maps (stride 4), else None.
        features: (N, F) pooled head features (for the centre loss).
    """

    logits: Tensor
    heatmap: Tensor
    attention: Tensor | None
    features: Tensor


class OMSF2Features(NamedTuple):
    """What the heads read: levels P2-P5, the CAM maps, backbone C4 and C5 (for BAP).

    Without a neck the levels are C2-C5; without the SSP neck there are no CAM maps (None).
    """

    levels: list[Tensor]
    cam: Tensor | None
    c4: Tensor
    c5: Tensor


class OMSF2(nn.Module):
    """The OMSF2 network. Build it with :func:`omsf2.create_model`.

    Args:
        cfg: architecture hyper-parameters.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNetBackbone(cfg.depth, cfg.in_chans, cfg.width)
        c2, c3, c4, c5 = self.backbone.channels
        self.neck: SSPNeck | LateralNeck | None = None
        if cfg.neck is NeckName.SSP:
            self.neck = SSPNeck((c2, c3, c4, c5), cfg.neck_channels, cfg.pool_windows)
        elif cfg.neck is NeckName.LATERAL:
            self.neck = LateralNeck((c2, c3, c4, c5), cfg.neck_channels)
        self.head: MSFFHead | GAPHead
        if cfg.head is HeadName.MSFF:
            self.head = MSFFHead(cfg.neck_channels, cfg.head_channels, cfg.num_classes, cfg.dropout)
        elif self.neck is None:
            self.head = GAPHead(c5, cfg.num_classes, cfg.dropout, level=-1)  # C5, as a plain ResNet
        else:
            level = 0 if cfg.neck is NeckName.SSP else -1  # fused P2 carries every level; an unfused L5 the most
            self.head = GAPHead(cfg.neck_channels, cfg.num_classes, cfg.dropout, level=level)
        self.bap = BAPHead(c4, c5, cfg.neck_channels, cfg.bap_maps, cfg.num_classes) if cfg.bap else None

    @property
    def num_classes(self) -> int:
        """Number of logits."""
        return self.cfg.num_classes

    def forward_features(self, x: Tensor) -> OMSF2Features:
        """Backbone and neck: the feature maps the heads read.

        Args:
            x: images, shape (N, in_chans, H, W), H and W multiples of 32.
        """
        c2, c3, c4, c5 = self.backbone(x)
        if isinstance(self.neck, SSPNeck):
            p, cam = self.neck((c2, c3, c4, c5))
            return OMSF2Features(p, cam, c4, c5)
        levels = [c2, c3, c4, c5] if self.neck is None else self.neck((c2, c3, c4, c5))
        return OMSF2Features(levels, None, c4, c5)

    def forward_head(self, f: OMSF2Features) -> ModelOutput:
        """MSFF head (and the BAP branch when built) on :meth:`forward_features`' output."""
        feats = self.head.forward_features(f.levels)
        logits = self.head(feats)
        attention = f.cam
        if self.bap is not None:
            bap_logits, attention = self.bap(f.c4, f.c5)
            logits = (logits + bap_logits) / 2
        heatmap = f.cam.mean(dim=1, keepdim=True) if f.cam is not None else activation_map(f.levels[0])
        return ModelOutput(logits, heatmap, attention, feats)

    def forward_train(self, x: Tensor) -> ModelOutput:
        """Forward pass exposing what training needs.

        Args:
            x: images, shape (N, in_chans, H, W), H and W multiples of 32.

        Returns:
            :class:`ModelOutput`.
        """
        return self.forward_head(self.forward_features(x))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Inference: (N, in_chans, H, W) -> (logits (N, num_classes), heatmap (N, 1, H/4, W/4))."""
        out = self.forward_train(x)
        return out.logits, out.heatmap


def activation_map(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Heat map of a variant without CAM maps: (N, C, H, W) -> channel mean scaled to [0, 1] per image."""
    a = x.float().abs().mean(dim=1, keepdim=True)
    lo = a.amin(dim=(2, 3), keepdim=True)
    hi = a.amax(dim=(2, 3), keepdim=True)
    return ((a - lo) / (hi - lo + eps)).to(x.dtype)


# Default configuration of each registered variant (ModelConfig fields; everything else defaults).
_CFGS: dict[str, dict[str, Any]] = {
    "omsf2_tiny": {
        "depth": 18,
        "width": 0.375,
        "neck_channels": 48,
        "head_channels": 48,
        "bap_maps": 16,
        "img_size": 224,
    },
    "omsf2_r18": {"depth": 18, "neck_channels": 128, "head_channels": 128, "img_size": 448},
    "omsf2_r50": {"depth": 50, "neck_channels": 128, "head_channels": 128, "img_size": 448},
}
_TINY = _CFGS["omsf2_tiny"]
_PLAIN = {"neck": NeckName.NONE, "head": HeadName.GAP, "bap": False}
_CFGS.update(
    {
        # Ablations of omsf2_tiny: one module off, everything else as is.
        "omsf2_tiny_no_neck": {**_TINY, "neck": NeckName.LATERAL},
        "omsf2_tiny_no_msff": {**_TINY, "head": HeadName.GAP},
        # Baselines: the plain ResNet (GAP + linear) of each width and depth.
        "resnet18_plain_tiny": {"depth": 18, "width": 0.375, "img_size": 224, **_PLAIN},
        "resnet18_plain": {"depth": 18, "img_size": 448, **_PLAIN},
        "resnet50_plain": {"depth": 50, "img_size": 448, **_PLAIN},
    }
)


def model_config(variant: str, **kwargs: Any) -> ModelConfig:
    """Default config of an OMSF2 ``variant`` with ``kwargs`` (ModelConfig fields) applied.

    Raises:
        ValueError: an unknown variant or option (naming the valid ones).
    """
    if variant not in _CFGS:
        raise ValueError(f"unknown model {variant!r}; choose one of {', '.join(sorted(_CFGS))}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"name"}
    bad = sorted(set(kwargs) - fields)
    if bad:
        raise ValueError(f"unknown model option(s) {bad}; valid: {sorted(fields)}")
    return ModelConfig(name=variant, **{**_CFGS[variant], **kwargs})


def _create_omsf2(variant: str, **kwargs: Any) -> OMSF2:
    """Build ``variant`` from its default config with ``kwargs`` (ModelConfig fields) applied."""
    return OMSF2(model_config(variant, **kwargs))


@register_model
def omsf2_tiny(**kwargs: Any) -> OMSF2:
    """ResNet-18 at 3/8 width, 224 input: about 2M parameters, for CPU tests and the demo."""
    return _create_omsf2("omsf2_tiny", **kwargs)


@register_model
def omsf2_r18(**kwargs: Any) -> OMSF2:
    """ResNet-18 backbone, 448 input."""
    return _create_omsf2("omsf2_r18", **kwargs)


@register_model
def omsf2_r50(**kwargs: Any) -> OMSF2:
    """ResNet-50 backbone, 448 input: the paper's size."""
    return _create_omsf2("omsf2_r50", **kwargs)


@register_model
def omsf2_tiny_no_neck(**kwargs: Any) -> OMSF2:
    """Ablation: omsf2_tiny with the neck reduced to 1x1 laterals (no SPP, DPPM, CAM or scale fusion)."""
    return _create_omsf2("omsf2_tiny_no_neck", **kwargs)


@register_model
def omsf2_tiny_no_msff(**kwargs: Any) -> OMSF2:
    """Ablation: omsf2_tiny with the MSFF head replaced by global average pooling of P2 + linear."""
    return _create_omsf2("omsf2_tiny_no_msff", **kwargs)


@register_model
def resnet18_plain_tiny(**kwargs: Any) -> OMSF2:
    """Baseline: plain ResNet-18 at 3/8 width (omsf2_tiny's backbone), GAP + linear, 224 input."""
    return _create_omsf2("resnet18_plain_tiny", **kwargs)


@register_model
def resnet18_plain(**kwargs: Any) -> OMSF2:
    """Baseline: plain ResNet-18 (omsf2_r18's backbone), GAP + linear, 448 input."""
    return _create_omsf2("resnet18_plain", **kwargs)


@register_model
def resnet50_plain(**kwargs: Any) -> OMSF2:
    """Baseline: plain ResNet-50 (omsf2_r50's backbone), GAP + linear, 448 input."""
    return _create_omsf2("resnet50_plain", **kwargs)
