"""PyTorch peer of bench/image-loader.js: torchvision's ImageFolder and transforms (uint8 output, as ours)
through a DataLoader with persistent workers, alone and feeding a training step of the same network in
eager mode. Reads one JSON command a line on stdin and answers each with one JSON line on stdout:
  {"cmd": "open", "dir", "transform": "train" | "eval", "batchSize", "workers", "shuffle"}: a new DataLoader
      (the previous one closed); answers the worker processes' ids, which the caller samples from /proc;
  {"cmd": "epoch"}: one pass; images, seconds and CPU seconds (this process and its workers) after the
      first batch, and their resident memory after the first batch, at the middle and at the last;
  {"cmd": "train", "spec", "steps", "warmup", "threads", "reuse"}: warmup + steps training steps on the open
      loader's batches (reuse: its first batch every time, the step alone), timed after the warm-up."""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from train_step import grad_mult
from vgg_net import Net

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def one_thread(_worker_id):
    # One torch thread per worker, the workers together using the cores (as our loader threads).
    torch.set_num_threads(1)


def cpu_seconds(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')  # utime + stime


def rss_bytes(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return 0


class Peer:
    def __init__(self):
        self.loader = None
        self.workers = []
        self.trainer = None

    def tree_rss(self):
        return sum(rss_bytes(pid) for pid in [os.getpid(), *self.workers])

    def tree_cpu(self):
        return sum(cpu_seconds(pid) for pid in [os.getpid(), *self.workers])

    def open(self, cmd):
        self.close()
        if cmd['transform'] == 'train':
            transform = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.PILToTensor()])
        else:
            transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.PILToTensor()])
        data = datasets.ImageFolder(cmd['dir'], transform=transform)
        self.loader = DataLoader(
            data,
            batch_size=cmd['batchSize'],
            shuffle=cmd['shuffle'],
            num_workers=cmd['workers'],
            persistent_workers=True,
            pin_memory=False,
            worker_init_fn=one_thread,
        )
        # The persistent workers start here; their first batches are the next pass's.
        self.workers = [w.pid for w in iter(self.loader)._workers]
        return {'workers': self.workers, 'count': len(data), 'classes': len(data.classes)}

    def close(self):
        if self.loader is not None:
            self.loader._iterator._shutdown_workers()
        self.loader = None
        self.workers = []

    def epoch(self, _cmd):
        batches = len(self.loader)
        marks = {}
        images = 0
        start = time.perf_counter()
        first = None
        for i, (x, _y) in enumerate(self.loader):
            if i == 0:
                first = time.perf_counter()
                cpu = self.tree_cpu()
            else:
                images += x.shape[0]
            if i in (1, batches // 2, batches - 1):
                marks[{1: 'start', batches // 2: 'middle', batches - 1: 'end'}[i]] = self.tree_rss()
        end = time.perf_counter()
        return {'images': images, 'seconds': end - first, 'cpuSeconds': self.tree_cpu() - cpu, 'firstBatchSeconds': first - start, 'rss': marks}

    def train(self, cmd):
        if self.trainer is None:
            torch.set_num_threads(cmd['threads'])
            torch.manual_seed(0)
            spec = cmd['spec']
            net = Net(spec)
            net.train()
            mults = [
                (block.conv.weight, grad_mult(block.conv.weight.detach(), b['inChannels'] == b['outChannels'] and b['stride'] == 1))
                for block, b in zip(net.blocks, spec['blocks'])
            ]
            opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)
            self.trainer = (net, mults, opt)
        net, mults, opt = self.trainer

        def step(x, y):
            x = x.float().div_(255).sub_(MEAN).div_(STD)
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
            loss.backward()
            for p, m in mults:
                p.grad.mul_(m)
            opt.step()

        batches = iter(self.loader)
        if cmd['reuse']:
            batch = next(batches)
            batches = iter(lambda: batch, None)
        for _ in range(cmd['warmup']):
            step(*next(batches))
        images = 0
        start = time.perf_counter()
        cpu = self.tree_cpu()
        for _ in range(cmd['steps']):
            x, y = next(batches)
            step(x, y)
            images += x.shape[0]
        return {'images': images, 'seconds': time.perf_counter() - start, 'cpuSeconds': self.tree_cpu() - cpu, 'rss': {'end': self.tree_rss()}}

def main():
    peer = Peer()
    print(json.dumps({'torch': torch.__version__, 'pid': os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        print(json.dumps(getattr(peer, cmd['cmd'])(cmd)), flush=True)
    peer.close()


main()
