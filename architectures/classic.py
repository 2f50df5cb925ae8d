"""Classic CNNs the field teaches that torchvision does not ship.

Module names differ between the two LeNets on purpose: their parameter shapes are
identical, so names are what lets ``cnnexport`` tell their checkpoints apart.
"""

from __future__ import annotations

import torch
from torch import nn

from exporter.architectures import IMAGENET_MEAN, IMAGENET_STD, ArchEntry

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun 1998): 1x32x32 input, tanh activations, average pooling."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 6, kernel_size=5)
        self.s2 = nn.AvgPool2d(2)
        self.c3 = nn.Conv2d(6, 16, kernel_size=5)
        self.s4 = nn.AvgPool2d(2)
        self.f5 = nn.Linear(16 * 5 * 5, 120)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.s2(torch.tanh(self.c1(x)))
        x = self.s4(torch.tanh(self.c3(x)))
        x = torch.flatten(x, 1)
        x = torch.tanh(self.f5(x))
        x = torch.tanh(self.f6(x))
        return self.output(x)


class LeNetMNIST(nn.Module):
    """The LeNet variant of MNIST tutorials: 1x28x28, ReLU, max pooling, padded first conv."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def _conv_bn_relu(cin: int, cout: int, stride: int, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al. 2017): depthwise-separable convolutions, width multiplier."""

    _CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()

        def ch(c: int) -> int:
            return max(8, int(c * width_mult))

        layers = [_conv_bn_relu(in_channels, ch(32), 2)]
        cin = ch(32)
        for cout, stride in self._CFG:
            layers.append(nn.Sequential(_conv_bn_relu(cin, cin, stride, groups=cin), _conv_bn_relu(cin, ch(cout), 1, kernel=1)))
            cin = ch(cout)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (He et al. 2016, CIFAR variant): 3x3 stem, no max pooling."""

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (n, cout) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
            stride = 1 if i == 1 else 2
            layer = []
            for j in range(n):
                layer.append(_BasicBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SimpleCNN(nn.Module):
    """A small three-block CNN for 32x32 colour images: the first model of many tutorials."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, 32, 1),
            nn.MaxPool2d(2),
            _conv_bn_relu(32, 64, 1),
            nn.MaxPool2d(2),
            _conv_bn_relu(64, 128, 1),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class TinyUNet(nn.Module):
    """A two-level U-Net (encoder, bottleneck, decoder with skip connections): per-pixel class logits (N, C, H, W).

    The dense counterpart of LeNet-5 (`cnnexport demo --task segment` trains it on generated shapes);
    H and W must be multiples of 4.
    """

    def __init__(self, num_classes: int = 4, in_channels: int = 3, width: int = 8):
        super().__init__()
        self.enc1 = _conv_bn_relu(in_channels, width, 1)
        self.enc2 = _conv_bn_relu(width, width * 2, 1)
        self.bottleneck = _conv_bn_relu(width * 2, width * 4, 1)
        self.up2 = nn.ConvTranspose2d(width * 4, width * 2, 2, stride=2)
        self.dec2 = _conv_bn_relu(width * 4, width * 2, 1)
        self.up1 = nn.ConvTranspose2d(width * 2, width, 2, stride=2)
        self.dec1 = _conv_bn_relu(width * 2, width, 1)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        b = self.bottleneck(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


def register_all(register) -> None:
    register(ArchEntry("lenet5", LeNet5, 10, 1, 32, 32, (0.5,), (0.5,), description="LeNet-5, tanh + avg pool, 1x32x32"))
    register(
        ArchEntry(
            "lenet_mnist",
            LeNetMNIST,
            10,
            1,
            28,
            28,
            (0.1307,),
            (0.3081,),
            description="LeNet for MNIST, ReLU + max pool, 1x28x28",
        )
    )
    register(
        ArchEntry(
            "mobilenet_v1",
            MobileNetV1,
            1000,
            3,
            224,
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            description="MobileNetV1, depthwise separable",
        )
    )
    register(
        ArchEntry(
            "cifar_resnet18",
            lambda **kw: CifarResNet((2, 2, 2, 2), **kw),
            10,
            3,
            32,
            32,
            CIFAR_MEAN,
            CIFAR_STD,
            description="ResNet-18 for 32x32 CIFAR images",
        )
    )
    register(
        ArchEntry(
            "cifar_resnet34",
            lambda **kw: CifarResNet((3, 4, 6, 3), **kw),
            10,
            3,
            32,
            32,
            CIFAR_MEAN,
            CIFAR_STD,
            description="ResNet-34 for 32x32 CIFAR images",
        )
    )
    register(
        ArchEntry(
            "tiny_unet",
            TinyUNet,
            4,
            3,
            48,
            48,
            (0.5, 0.5, 0.5),
            (0.25, 0.25, 0.25),
            task="segment",
            description="two-level U-Net, per-pixel class logits, 3x48x48",
        )
    )
    register(ArchEntry("simple_cnn", SimpleCNN, 10, 3, 32, 32, CIFAR_MEAN, CIFAR_STD, description="small 3-block CNN, 3x32x32"))
