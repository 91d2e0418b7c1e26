"""PyTorch peer of bench/cuda/train-step.js: the same RepOpt-VGG-B1 training step (zero grad, forward,
label-smoothed cross-entropy, backward, GradMult multiply as the official code does, SGD nesterov) on
the same shapes, eager and torch.compile. Prints one JSON line."""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'python'))
from vgg_net import Net  # noqa: E402


def run(cfg, compiled):
    torch.manual_seed(0)
    dev = 'cuda'
    spec, batch, size = cfg['spec'], cfg['batchSize'], cfg['imageSize']
    bf16 = cfg['precision'] == 'bf16'
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    net = Net(spec).to(dev).to(memory_format=fmt)
    mults = [(b.conv.weight, torch.rand_like(b.conv.weight) + 0.5) for b in net.blocks]
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=dev).to(memory_format=fmt)
    y = torch.randint(0, spec['numClasses'], (batch,), device=dev)
    model = torch.compile(net) if compiled else net

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        for p, m in mults:
            p.grad.mul_(m)
        opt.step()

    start = time.perf_counter()
    for _ in range(cfg['warmup']):
        step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - start
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(cfg['steps']):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - start) * 1000 / cfg['steps']
    return {'msPerStep': ms, 'peakBytes': torch.cuda.max_memory_allocated(), 'warmupSeconds': warm}


def main():
    cfg = json.loads(sys.argv[1])
    torch.backends.cudnn.benchmark = True
    out = {'eager': run(cfg, False), 'torch': torch.__version__, 'device': torch.cuda.get_device_name()}
    if cfg.get('compile'):
        out['compiled'] = run(cfg, True)
    print(json.dumps(out))


main()
