"""Built-in architectures: the example teacher and anything a checkpoint names as `kdcompile.models:<factory>`."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class MnistCNN(nn.Module):
    """conv-bn-relu blocks, two max-pools, global average pool, linear head.

    With width=32: channels 32-64 | 128-128 | 256, 0.54 M parameters, 73 M multiply-adds per 1x28x28 image.
    """

    def __init__(self, width: int = 32, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, w),
            conv_bn_relu(w, 2 * w),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * w, 4 * w),
            conv_bn_relu(4 * w, 4 * w),
            nn.MaxPool2d(2),
            conv_bn_relu(4 * w, 8 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def mnist_cnn(width: int = 32, in_channels: int = 1, num_classes: int = 10) -> MnistCNN:
    return MnistCNN(width, in_channels, num_classes)
