"""PyTorch eager peer of bench/train-step.js: the same training step (gather a batch from uint8 images,
normalise, forward, label-smoothed cross-entropy, backward, RepOptSGD or SGD step, accuracy count)
on the same network spec, threads and shapes. Prints one JSON line: ms per step of each run."""
import json
import sys
import time

import torch
import torch.nn.functional as F

from vgg_net import Net


def grad_mult(weight, identity):
    """A full GradMult tensor as the official code stores it (values do not matter for timing)."""
    out = weight.shape[0]
    s, t = torch.rand(out) + 0.5, torch.rand(out) + 0.5
    m = torch.ones_like(weight) * (s ** 2).view(-1, 1, 1, 1)
    m[:, :, 1:2, 1:2] += (t ** 2).view(-1, 1, 1, 1)
    if identity:
        ids = torch.arange(out)
        m[ids, ids, 1, 1] += 1.0
    return m


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg['threads'])
    torch.manual_seed(0)
    spec = cfg['spec']
    net = Net(spec)
    n, (c, h, w) = cfg['count'], cfg['imageShape']
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)
    labels = torch.randint(0, spec['numClasses'], (n,))
    mults = []
    if cfg['optimizer'] == 'repopt-sgd':
        for block, b in zip(net.blocks, spec['blocks']):
            mults.append((block.conv.weight, grad_mult(block.conv.weight.detach(), b['inChannels'] == b['outChannels'] and b['stride'] == 1)))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)
    batch = cfg['batchSize']
    perm = torch.randperm(n)
    correct = torch.zeros((), dtype=torch.long)
    net.train()

    def step(i):
        nonlocal correct
        idx = perm[(i * batch) % (n - batch + 1):][:batch]
        x = images.index_select(0, idx).float().div_(255).sub_(0.5).div_(0.25)
        y = labels.index_select(0, idx)
        opt.zero_grad()
        out = net(x)
        loss = F.cross_entropy(out, y, label_smoothing=0.1)
        loss.backward()
        for p, m in mults:
            p.grad.mul_(m)
        opt.step()
        correct += (out.detach().argmax(1) == y).sum()

    for i in range(cfg['warmup']):
        step(i)
    runs = []
    for r in range(cfg['runs']):
        start = time.perf_counter()
        for i in range(cfg['steps']):
            step(i)
        runs.append((time.perf_counter() - start) * 1000 / cfg['steps'])
    print(json.dumps({'msPerStep': runs, 'torch': torch.__version__, 'threads': torch.get_num_threads()}))


if __name__ == '__main__':
    main()
