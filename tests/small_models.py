"""Small user-style models for tests (importable as tests.small_models:NAME)."""

import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class SmallResNet(nn.Module):
    """A ResNet-style net (residual blocks + BatchNorm) narrow enough to train on 2 cores in seconds."""

    def __init__(self, num_classes=10, in_channels=1, width=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = _Block(width, width, 1)
        self.layer2 = _Block(width, width * 2, 2)
        self.layer3 = _Block(width * 2, width * 4, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class SixLayerCNN(nn.Module):
    """Four Conv-BN-ReLU blocks and two Linear layers: a LeNet-sized digits net with six weighted layers."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        widths = [in_channels, 8, 16, 16, 32]
        blocks = []
        for cin, cout in zip(widths, widths[1:]):
            blocks += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)
        self.fc1 = nn.Linear(32 * 2 * 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(self.features(x), 1))))


class WideSmallResNet(SmallResNet):
    """SmallResNet at width 48 (about 0.6 M weights): past the 256 KiB from which ai-edge-quantizer
    stores a model's buffers after the flatbuffer, by offset."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__(num_classes, in_channels, width=48)


class ChannelShuffleCNN(nn.Module):
    """A ShuffleNet unit (split, a branch, concat, then the channel shuffle's view / transpose / view):
    a graph whose ExecuTorch lowering fixes the batch at the export example (executorch 1.5.1, measured)."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, 2, 1)
        self.conv2 = nn.Conv2d(4, 4, 3, 1, 1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        kept, branch = x.chunk(2, dim=1)
        x = torch.cat((kept, torch.relu(self.conv2(branch))), 1)
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        return self.fc(x.mean((2, 3)))


class HardswishCNN(nn.Module):
    """Six Conv-BN-Hardswish layers and a Linear head. Hardswish is not positively homogeneous, so cross-layer
    equalization cannot move a channel's scale across it (an outlier channel stays where it is)."""

    def __init__(self, num_classes=10, in_channels=1, width=16):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for stride in (1, 1, 2, 1, 2, 1):
            layers += [nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.Hardswish()]
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))
