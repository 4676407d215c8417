"""The networks whose tasks make up the tensor-program dataset, defined here so that anyone can regenerate it.

Each entry builds an nn.Module and names its batch-1 input shape; the collector exports and lowers it exactly
as `kdcompile tune` does. CNNs use 112x112 inputs instead of 224x224 to keep one measurement under ~10 ms on
2 cores (said in datasets/README.md); transformers take float (b, l, d) inputs, so no task has integer arguments.

Glossary: b batch, l sequence length, d model width, h heads.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


# ---- CNNs -------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.down = (nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                     if stride != 1 or c_in != c else nn.Identity())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.down(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, c: int, stride: int):
        super().__init__()
        c_out = 4 * c
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.down = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                     if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        return F.relu(self.body(x) + self.down(x))


class ResNet(nn.Module):
    def __init__(self, block, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, c_in = [], 64
        for i, n in enumerate(layers):
            c = 64 * 2**i
            for j in range(n):
                blocks.append(block(c_in, c, 2 if j == 0 and i > 0 else 1))
                c_in = c * block.expansion
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers = [] if expand == 1 else [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    # (expansion, channels, repeats, stride) from the paper's Table 2
    CONFIG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers, c_in = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()], 32
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        layers += [nn.Conv2d(c_in, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# ---- sequence models --------------------------------------------------------------------------------------
class EncoderLayer(nn.Module):
    """Post-norm BERT layer written out (no fused fast path), so it exports to plain ONNX ops."""

    def __init__(self, d: int, h: int, ff: int):
        super().__init__()
        self.h = h
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x):  # (b, l, d)
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)  # 3 x (b, h, l, d/h)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.h) ** 0.5, dim=-1)  # (b, h, l, l)
        x = self.ln1(x + self.proj((att @ v).transpose(1, 2).reshape(b, l, d)))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


class Encoder(nn.Module):
    def __init__(self, d: int, h: int, ff: int, layers: int):
        super().__init__()
        self.layers = nn.Sequential(*[EncoderLayer(d, h, ff) for _ in range(layers)])

    def forward(self, x):  # (b, l, d)
        return self.layers(x)


class ViT(nn.Module):
    def __init__(self, image: int = 64, patch: int = 8, d: int = 192, h: int = 3, layers: int = 2):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, (image // patch) ** 2, d))
        self.encoder = Encoder(d, h, 4 * d, layers)
        self.head = nn.Linear(d, 1000)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # (b, l, d)
        return self.head(self.encoder(x).mean(1))


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, d: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):  # (b, l, d)
        x = x + self.token_mlp(self.ln1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.ln2(x))


class Mixer(nn.Module):
    def __init__(self, image: int = 64, patch: int = 8, d: int = 256, layers: int = 2):
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch = nn.Conv2d(3, d, patch, patch)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, d) for _ in range(layers)])
        self.head = nn.Linear(d, 1000)

    def forward(self, x):
        return self.head(self.blocks(self.patch(x).flatten(2).transpose(1, 2)).mean(1))


class TCN(nn.Module):
    """A causal dilated 1-D conv sequence model (LSTM-free): input (b, channels, l)."""

    def __init__(self, channels: int = 128, layers: int = 4, kernel: int = 3):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=2**i) for i in range(layers))
        self.kernel = kernel

    def forward(self, x):  # (b, c, l)
        for i, conv in enumerate(self.convs):
            x = x + F.relu(conv(F.pad(x, ((self.kernel - 1) * 2**i, 0))))
        return x


def _mnist_student():
    from kdcompile.models import mnist_cnn
    from kdcompile.student import prune_width

    return prune_width(mnist_cnn().eval(), torch.zeros(1, 1, 28, 28), 0.25)


def _mnist_teacher():
    from kdcompile.models import mnist_cnn

    return mnist_cnn()


def _trained_statistics(model: nn.Module) -> nn.Module:
    """Batch norms given statistics and affine terms as a trained model has them (seeded). At their initial values
    (mean 0, variance 1, scale 1, shift 0) folding them into the convolutions leaves no bias, so the tasks lack the
    `add` that every trained model's convolutions fuse (`fused_conv2d_relu` against `fused_conv2d_add_relu`)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0), (m.weight.data, 0.5, 1.5),
                              (m.bias.data, -0.5, 0.5)):
                t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model


def _demo_teacher():
    return _trained_statistics(_mnist_teacher()).eval()


def _demo_student():
    """The student `make demo` ships, task for task: the width student of a trained MNIST teacher."""
    from kdcompile.student import prune_width

    return prune_width(_demo_teacher(), torch.zeros(1, 1, 28, 28), 0.25)


# name -> (factory, batch-1 input shape)
NETWORKS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resnet18": (lambda: ResNet(BasicBlock, [2, 2, 2, 2]), (1, 3, 112, 112)),
    "resnet50": (lambda: ResNet(Bottleneck, [3, 4, 6, 3]), (1, 3, 112, 112)),
    "mobilenet_v2": (MobileNetV2, (1, 3, 112, 112)),
    "bert_small": (lambda: Encoder(256, 4, 1024, 2), (1, 64, 256)),
    "bert_base": (lambda: Encoder(768, 12, 3072, 1), (1, 128, 768)),
    "vit_tiny": (ViT, (1, 3, 64, 64)),
    "mlp_mixer": (Mixer, (1, 3, 64, 64)),
    "tcn": (TCN, (1, 128, 256)),
    "mnist_teacher": (_mnist_teacher, (1, 1, 28, 28)),
    "mnist_student": (_mnist_student, (1, 1, 28, 28)),
    # the same two as trained (their convolutions carry a bias): the built-in example and the student distilled from it
    "demo_teacher": (_demo_teacher, (1, 1, 28, 28)),
    "demo_student": (_demo_student, (1, 1, 28, 28)),
}
BATCHES = (1, 8)
# Also collected channels-last (`tvm_layer.lowering.Lowering(layout="NHWC")`, `kdcompile tune --layout nhwc`): the CNNs.
CHANNELS_LAST = ("resnet18", "resnet50", "mobilenet_v2", "mnist_teacher", "mnist_student", "demo_teacher",
                 "demo_student")
# Held out of training, as TenSet and TLP hold out whole networks.
TEST_NETWORKS = ("resnet50", "mobilenet_v2", "bert_base")
# Training networks set aside for choices made while training (size, steps, learning rate, features): the
# nearest kin of the test networks (a ResNet, a BERT encoder); the zoo has no second depthwise CNN to set aside.
VALIDATION_NETWORKS = ("resnet18", "bert_small")


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    factory, shape = NETWORKS[name]
    torch.manual_seed(0)
    return factory().eval(), shape
