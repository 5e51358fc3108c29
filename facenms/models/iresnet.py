"""IResNet: the "improved" pre-activation ResNet insightface trains faces with.

Block layout (per insightface's IBasicBlock): BN -> conv3x3 -> BN -> PReLU ->
conv3x3 (stride) -> BN, plus a 1x1-conv/BN shortcut when the shape changes.
The stem keeps full resolution (3x3, stride 1); each of the four stages halves
it, so a 112x112 face ends as a 7x7 map. The embedding head is
BN2d -> Dropout -> flatten -> FC -> BN1d, the BN1d without a learned scale.
"""
import torch
from torch import nn

# blocks per stage for the standard depths
DEPTHS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}
STRIDE = 16  # four stride-2 stages


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """``layers``: blocks per stage; ``width``: channels of the first stage
    (doubled at each later stage, 64 as in insightface)."""

    def __init__(self, layers=(2, 2, 2, 2), width=64, embedding_size=512,
                 input_size=112, dropout=0.0):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError("IResNet: layers must be 4 positive block counts, got %r"
                             % (layers,))
        if input_size % STRIDE:
            raise ValueError("IResNet: input_size must be a multiple of %d (four stride-2 "
                             "stages), got %d" % (STRIDE, input_size))
        self.input_size = input_size
        self.embedding_size = embedding_size
        self.conv1 = _conv3x3(3, width)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-5)
        self.prelu = nn.PReLU(width)
        stages, cin = [], width
        for i, n in enumerate(layers):
            cout = width * 2 ** i
            blocks = [IBasicBlock(cin, cout, 2)]
            blocks += [IBasicBlock(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        side = input_size // STRIDE
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        # a fixed unit scale: the embedding's direction is what the margin head
        # learns, a learned per-dimension scale only adds a degree of freedom
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        # start each residual branch near zero so deep stacks train from the identity
        for m in self.modules():
            if isinstance(m, IBasicBlock):
                nn.init.constant_(m.bn3.weight, 0)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))
