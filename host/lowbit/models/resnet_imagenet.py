"""ImageNet ResNet-18/34 (He et al. 2016, Table 1) with basic blocks and 1x1 projection shortcuts
(option B), matching the usual 11.7M / 21.8M parameter counts. Plain torch."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lowbit.models.blocks import BasicBlock, kaiming_init, projection_shortcut


class ImageNetResNet(nn.Module):
    STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

    def __init__(self, depth: int, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        if depth not in self.STAGES:
            raise ValueError(f"ImageNet ResNet depth must be one of {sorted(self.STAGES)}, got {depth}")
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths, planes = (64, 128, 256, 512), 64
        stages = []
        for i, (width, blocks) in enumerate(zip(widths, self.STAGES[depth])):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(planes, width, stride, projection_shortcut)]
            layers += [BasicBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
