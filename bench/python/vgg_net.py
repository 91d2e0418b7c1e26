"""The plain RepOpt-VGG network (target blocks: conv3x3-BN-ReLU, GAP, linear) built from a repopt
network spec, for the PyTorch peers of the benchmarks."""
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Net(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(b['inChannels'], b['outChannels'], b['stride']) for b in spec['blocks']])
        self.linear = nn.Linear(spec['blocks'][-1]['outChannels'], spec['numClasses'])

    def forward(self, x):
        return self.linear(self.blocks(x).mean((2, 3)))
