"""ResNet backbone returning C2-C5 (He et al., "Deep Residual Learning for Image Recognition", 2016).

The package's own ResNet rather than torchvision's or timm's: those pull a torchvision build that
does not import beside the CPU torch wheel used here. Parameter names match torchvision's ResNet
(``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so a torchvision state dict saved locally loads with
``--init`` (3-channel stem weights are summed into a 1-channel stem). A width multiplier gives the
tiny CPU variants; nothing is ever downloaded.
"""

from __future__ import annotations

from torch import Tensor, nn

_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _ch(c: float) -> int:
    # Round to a multiple of 8 (>= 8): keeps tensor-core-friendly channel counts at any width.
    return max(8, int(c + 4) // 8 * 8)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, ch, 1, stride, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_ch, H, W) -> (N, ch, H/stride, W/stride)."""
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as torchvision's "ResNet v1.5"), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int = 1) -> None:
        super().__init__()
        out = ch * self.expansion
        self.conv1 = nn.Conv2d(in_ch, ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.conv3 = nn.Conv2d(ch, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_ch, H, W) -> (N, 4 ch, H/stride, W/stride)."""
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + idt)


class ResNetBackbone(nn.Module):
    """ResNet-18/34/50 trunk without the classifier; returns the four stage outputs.

    Attributes:
        channels: channels of (C2, C3, C4, C5).
        strides: their strides relative to the input, (4, 8, 16, 32).
    """

    strides = (4, 8, 16, 32)

    def __init__(self, depth: int = 18, in_chans: int = 1, width: float = 1.0) -> None:
        super().__init__()
        if depth not in _LAYERS:
            raise ValueError(f"ResNet depth must be one of {sorted(_LAYERS)}, got {depth!r}")
        block: type[BasicBlock] | type[Bottleneck] = Bottleneck if depth >= 50 else BasicBlock
        stem = _ch(64 * width)
        self.conv1 = nn.Conv2d(in_chans, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = stem
        chans = []
        stages = []
        for i, (n, base) in enumerate(zip(_LAYERS[depth], (64, 128, 256, 512), strict=True)):
            ch = _ch(base * width)
            blocks = []
            for j in range(n):
                blocks.append(block(in_ch, ch, stride=2 if (j == 0 and i > 0) else 1))
                in_ch = ch * block.expansion
            stages.append(nn.Sequential(*blocks))
            chans.append(in_ch)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels: tuple[int, int, int, int] = (chans[0], chans[1], chans[2], chans[3])
        self._init_weights(block)

    def _init_weights(self, block: type[nn.Module]) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every block starts as identity, which
        # trains faster and more stably from scratch (Goyal et al., 2017).
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run the trunk.

        Args:
            x: images, shape (N, in_chans, H, W).

        Returns:
            (C2, C3, C4, C5) with shapes (N, channels[i], H / strides[i], W / strides[i]).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5


def adapt_stem_weight(weight: Tensor, in_chans: int) -> Tensor:
    """Convert a stem conv weight (O, I, k, k) to ``in_chans`` input channels.

    3 -> 1 sums the RGB filters (a gray image replicated to RGB gives the same response);
    1 -> 3 splits the filter evenly over the channels.
    """
    have = weight.shape[1]
    if have == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    if have == 1:
        return weight.repeat(1, in_chans, 1, 1) / in_chans
    raise ValueError(f"cannot adapt a stem with {have} input channels to {in_chans}")
