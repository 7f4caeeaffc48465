"""PyTorch (CPU) peer of `deno task bench`: the same workloads as ours, timed on the CPU.

Run by bench/peers/pytorch.ts (`python3 bench/peers/pytorch.py --json`), or standalone for a
table. Each row is keyed by the workload keys of bench/peers/workloads.ts (`WORK`); the TypeScript
side adds the names and work counts, so every rate comes from the same FLOP/byte/image count.

Threads: torch.set_num_threads(--threads), default all logical CPUs (what a user gets).
Timing: warm-up, then the best of 3 rounds of at least --min-ms of iterations each (eager mode,
float32, NCHW). The matmul rows run on whatever BLAS torch links (reported: Debian's default
reference BLAS is single-threaded and slow; `apt-get install libopenblas0-pthread` switches it).
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The shapes of bench/peers/workloads.ts (CONV): batch 64, 64 -> 64 channels, 32x32, 3x3, pad 1.
BATCH, CHANNELS, SIZE, KERNEL = 64, 64, 32, 3


def time_ms(fn, warmup=2, iters=5, min_ms=300.0, rounds=3):
    """Milliseconds per call of fn after warm-up: the best of `rounds` round means, each over at
    least `iters` calls and `min_ms` (the statistic of our rows and the tfjs peer's)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(rounds):
        n = 0
        start = time.perf_counter()
        while n < iters or (time.perf_counter() - start) * 1000 < min_ms:
            fn()
            n += 1
        best = min(best, (time.perf_counter() - start) * 1000 / n)
    return best


def blas_library():
    """The BLAS library torch.mm runs on, from this process's mappings (Debian's torch links
    libblas.so.3, which the alternatives system points at the reference BLAS or OpenBLAS)."""
    torch.mm(torch.ones(8, 8), torch.ones(8, 8))
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line}
    except OSError:
        return "unknown"
    real = sorted({os.path.realpath(p) for p in paths})
    return ", ".join(real) if real else "built in"


class BasicBlock(nn.Module):
    """Our BasicBlock (src/models/resnet.ts): two 3x3 convs, 1x1 conv + BN shortcut on a shape change."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet8(nn.Module):
    """ResNet-8 of our zoo: 3x3 stem, one block per stage (16, 32, 64), global pool, linear."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        y = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def bench(min_ms):
    torch.manual_seed(1)
    rows = {}
    timing = {"min_ms": min_ms}

    for n, key in ((512, "matmul512"), (1024, "matmul1024")):
        a, b = torch.randn(n, n), torch.randn(n, n)
        rows[key] = time_ms(lambda: torch.mm(a, b), **timing)

    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE)
    w = torch.randn(CHANNELS, CHANNELS, KERNEL, KERNEL) * 0.05
    dy = torch.randn(BATCH, CHANNELS, SIZE, SIZE)
    with torch.no_grad():
        rows["convForward"] = time_ms(lambda: F.conv2d(x, w, padding=1), **timing)
        # What autograd calls for conv2d's input and weight gradients.
        rows["convBackwardData"] = time_ms(
            lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, padding=1), **timing
        )
        rows["convBackwardFilter"] = time_ms(
            lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, padding=1), **timing
        )

    # Training-mode batchnorm; backward = (forward + backward) - forward, as in the tfjs peer.
    gamma = torch.ones(CHANNELS, requires_grad=True)
    beta = torch.zeros(CHANNELS, requires_grad=True)
    xg = x.clone().requires_grad_(True)
    with torch.no_grad():
        forward_ms = time_ms(lambda: F.batch_norm(x, None, None, gamma, beta, training=True), **timing)
    rows["batchnormForward"] = forward_ms

    def forward_backward():
        y = F.batch_norm(xg, None, None, gamma, beta, training=True)
        torch.autograd.grad(y, (xg, gamma, beta), dy)

    rows["batchnormBackward"] = max(time_ms(forward_backward, **timing) - forward_ms, 1e-3)

    model = ResNet8().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(64, 3, 32, 32)
    labels = torch.arange(64) % 10

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    before = F.cross_entropy(model(images), labels).item()
    rows["resnet8Step"] = time_ms(step, warmup=2, iters=10, min_ms=max(min_ms, 1000.0))
    after = F.cross_entropy(model(images), labels).item()
    if not after < before:
        raise SystemExit(f"pytorch peer: resnet8 loss did not decrease ({before} -> {after})")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--min-ms", type=float, default=300.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench(args.min_ms)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "blas": blas_library()}
    if args.json:
        json.dump({"info": info, "msPerIter": rows}, sys.stdout)
    else:
        print(f"PyTorch {info['torch']}, {info['threads']} threads, BLAS {info['blas']}")
        for key, ms in rows.items():
            print(f"  {key:<22} {ms:10.2f} ms")


if __name__ == "__main__":
    main()
