"""MobileFaceNet (Chen et al., 2018): inverted-residual bottlenecks and a global
depthwise conv (GDConv) instead of global pooling, so that the embedding can
weigh face regions differently. Spatial size shrinks 16x (112 -> 7)."""
from torch import nn

STRIDE = 16
# (expansion t, channels c, repeats n, stride s) as in the paper's table 1
SETTINGS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def _conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if k > 1 else 0,
                        groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        mid = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            _conv_bn(cin, mid, 1),
            _conv_bn(mid, mid, 3, stride=stride, groups=mid),
            _conv_bn(mid, cout, 1, act=False))  # linear bottleneck

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileFaceNet(nn.Module):
    """``width``: multiplier on every channel count (1.0 = the paper's net)."""

    def __init__(self, embedding_size=128, input_size=112, width=1.0):
        super().__init__()
        if input_size % STRIDE:
            raise ValueError("MobileFaceNet: input_size must be a multiple of %d, got %d"
                             % (STRIDE, input_size))
        self.input_size = input_size
        self.embedding_size = embedding_size

        def ch(c):
            return max(8, int(round(c * width)))

        layers = [_conv_bn(3, ch(64), 3, stride=2),
                  _conv_bn(ch(64), ch(64), 3, groups=ch(64))]
        cin = ch(64)
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(Bottleneck(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        layers.append(_conv_bn(cin, ch(512), 1))
        self.body = nn.Sequential(*layers)
        side = input_size // STRIDE
        # GDConv: one depthwise filter covering the whole final map
        self.gdconv = _conv_bn(ch(512), ch(512), side, groups=ch(512), act=False)
        self.gdconv[0].padding = (0, 0)
        self.embed = nn.Sequential(nn.Conv2d(ch(512), embedding_size, 1, bias=False),
                                   nn.BatchNorm2d(embedding_size))

    def forward(self, x):
        return self.embed(self.gdconv(self.body(x))).flatten(1)
