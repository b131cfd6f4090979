"""ResNet v1 and v2 (pre-activation) backbones.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (v1) and
He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016 (v2, pre-activation).
Kolesnikov, Zhai, Beyer (CVPR 2019) found v2 and width multipliers matter for self-supervision,
hence ``version`` and ``width``.

Depths are rows of ``DEPTHS``; ``width`` scales every stage's channels (64·width at the first stage).
For inputs of at most 64 px the ImageNet stem (7×7 stride-2 conv + max-pool, a 4× reduction) throws
away most of the image, so ``stem="auto"`` switches to a single 3×3 stride-1 conv, as CIFAR ResNets do.

Shapes (default 32 px input, small stem, depth 18, width 1): ``forward`` ``(B, 3, 32, 32) -> (B, 512)``;
``forward_features`` ``-> (B, 512, 4, 4)``. ResNet-50 v1 has 23.5M parameters (no head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shortcutlens.backbones import BACKBONES
from shortcutlens.backbones.interface import resolve_layer_indices

# depth -> (block type, blocks per stage)
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class _ResidualBlock(nn.Module):
    """What the two block kinds share: the shortcut and the order of norms, activations and convolutions.

    v1 (post-activation, He et al., CVPR 2016): ``relu(bn(conv(x)))`` per conv, the last one's ReLU after
    the sum; v2 (pre-activation, He et al., ECCV 2016) normalises the block's *input*: ``conv(relu(bn(x)))``
    per conv, and the projection shortcut reads the normalised input. Subclasses build ``conv1..k`` and
    ``bn1..k``, then ``add_shortcut`` (in that order: the order of creation is the order of the random
    initialisation and of the parameters), and list the pairs in ``layers()``."""

    expansion = 1

    def add_shortcut(self, cin: int, cout: int, stride: int) -> None:
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _conv1x1(cin, cout, stride) if stride != 1 or cin != cout else None
        self.shortcut_bn = nn.BatchNorm2d(cout) if (self.shortcut is not None and not self.preact) else None

    def layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (conv1, bn1), *rest = self.layers()
        if self.preact:
            out = self.relu(bn1(x))
            skip = self.shortcut(out) if self.shortcut is not None else x
            out = conv1(out)
            for conv, bn in rest:
                out = conv(self.relu(bn(out)))
            return out + skip
        skip = x if self.shortcut is None else self.shortcut_bn(self.shortcut(x))
        out = bn1(conv1(x))
        for conv, bn in rest:
            out = bn(conv(self.relu(out)))
        return self.relu(out + skip)


class BasicBlock(_ResidualBlock):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, preact: bool) -> None:
        super().__init__()
        cout, self.preact = planes * self.expansion, preact
        self.conv1 = _conv3x3(cin, planes, stride)
        self.conv2 = _conv3x3(planes, cout)
        self.bn1 = nn.BatchNorm2d(cin if preact else planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.add_shortcut(cin, cout, stride)

    def layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [(self.conv1, self.bn1), (self.conv2, self.bn2)]


class Bottleneck(_ResidualBlock):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, preact: bool) -> None:
        super().__init__()
        cout, self.preact = planes * self.expansion, preact
        self.conv1 = _conv1x1(cin, planes)
        self.conv2 = _conv3x3(planes, planes, stride)  # stride on the 3x3 ("ResNet v1.5")
        self.conv3 = _conv1x1(planes, cout)
        self.bn1 = nn.BatchNorm2d(cin if preact else planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.bn3 = nn.BatchNorm2d(planes if preact else cout)
        self.add_shortcut(cin, cout, stride)

    def layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)]


@BACKBONES.register("resnet")
class ResNet(nn.Module):
    """ResNet feature extractor following the shared backbone interface.

    Args:
        depth: one of ``DEPTHS`` (18, 34, 50, 101, 152).
        version: 1 (post-activation) or 2 (pre-activation).
        width: channel multiplier; stage widths are ``round(64·width)·(1, 2, 4, 8)``.
        in_chans: input channels (1 for grayscale data, 3 for colour).
        img_size: expected input size, used by ``stem="auto"``.
        stem: ``"auto"`` (small stem for ``img_size <= 64``), ``"small"`` or ``"imagenet"``.
    """

    def __init__(
        self,
        *,
        depth: int = 18,
        version: int = 1,
        width: float = 1.0,
        in_chans: int = 3,
        img_size: int = 224,
        stem: str = "auto",
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"Unknown ResNet depth {depth}. Valid depths: {', '.join(map(str, DEPTHS))}")
        if version not in (1, 2):
            raise ValueError(f"ResNet version must be 1 or 2, got {version}")
        if stem == "auto":
            stem = "small" if img_size <= 64 else "imagenet"
        if stem not in ("small", "imagenet"):
            raise ValueError(f"Unknown ResNet stem '{stem}'. Valid stems: auto, imagenet, small")
        if width <= 0:
            raise ValueError(f"ResNet width must be positive, got {width}")
        block_name, blocks = DEPTHS[depth]
        block = BasicBlock if block_name == "basic" else Bottleneck
        preact = version == 2
        base = max(1, round(64 * float(width)))

        if stem == "small":
            layers: list[nn.Module] = [_conv3x3(in_chans, base)]
        else:
            layers = [nn.Conv2d(in_chans, base, 7, stride=2, padding=3, bias=False)]
        if not preact:  # v2 blocks normalise their own input
            layers += [nn.BatchNorm2d(base), nn.ReLU(inplace=True)]
        if stem == "imagenet":
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*layers)

        stages = []
        cin = base
        for i, n in enumerate(blocks):
            planes = base * 2**i
            stage = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(block(cin, planes, stride, preact))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        # v2's final activation: the last block output is not yet normalised.
        self.final_norm = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self.num_features = cin
        self.depth, self.version, self.width = depth, version, width
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, num_features, H/s, W/s)`` the last feature map."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.final_norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, num_features)`` globally average-pooled features."""
        return self.forward_features(x).mean(dim=(2, 3))

    @property
    def num_intermediates(self) -> int:
        return 1 + len(self.stages)

    def forward_intermediates(self, x: torch.Tensor, layers: int | Sequence[int] | None = None) -> list[torch.Tensor]:
        """Feature maps after the stem (index 0) and after each stage (1..4).

        Args:
            layers: indices to return (negative counts from the end), an int ``n`` for the last ``n``,
                or ``None`` for all. The last stage's map includes v2's final norm, so it equals
                ``forward_features``.
        Returns:
            list of ``(B, C_i, H_i, W_i)`` tensors, in the order of the requested indices.
        """
        indices = resolve_layer_indices(layers, self.num_intermediates)
        outs: dict[int, torch.Tensor] = {}
        x = self.stem(x)
        outs[0] = x
        last = max(indices)
        for i, stage in enumerate(self.stages, start=1):
            if i > last:
                break
            x = stage(x)
            outs[i] = self.final_norm(x) if i == len(self.stages) else x
        return [outs[i] for i in indices]
