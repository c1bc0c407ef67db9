#!/usr/bin/python3
"""torch_ref.py - the Python yardstick for bench_train.

    /usr/bin/python3 tests/bench/torch_ref.py ARCH THREADS IMAGES

Trains the same network as model/model.cpp (same layers, same construction
order, same initialisation after torch.manual_seed) with the same loop as
model_train(): a seeded randperm, index_select per mini-batch, cross-entropy,
SGD with momentum, loss.item() and an arg-max count per batch. One epoch over
IMAGES synthetic 1x28x28 images, 2 classes, batch 32, lr 0.01, momentum 0.9,
after a warm-up of 64 images. Prints one JSON object, like bench_train:

    {"arch":"cnn","threads":1,"images":2000,"seconds":...,"images_per_s":...}

Uses Debian's python3-torch, the same LibTorch build as libtorch-dev, so the
difference between the two numbers is the cost of the C shim (or of Python).
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNELS, SIDE, CLASSES = 1, 28, 2
BATCH, LR, MOMENTUM = 32, 0.01, 0.9
WARMUP = 64


class Cnn(nn.Module):
    """The FedAvg-paper CNN, as in model.cpp."""

    def __init__(self, in_ch, h, w, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * (h // 4) * (w // 4), 512)
        self.fc2 = nn.Linear(512, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def conv_nobias(cin, cout, k, stride, pad):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock; downsample is built by the caller first."""

    def __init__(self, cin, planes, stride, downsample):
        super().__init__()
        self.conv1 = conv_nobias(cin, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv_nobias(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample  # None registers nothing, as in torchvision

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18; a 3x3 stride-1 stem without max-pool below 64 px."""

    def __init__(self, in_ch, h, w, classes):
        super().__init__()
        self.small_input = h < 64 or w < 64
        self.inplanes = 64
        if self.small_input:
            self.conv1 = conv_nobias(in_ch, 64, 3, 1, 1)
        else:
            self.conv1 = conv_nobias(in_ch, 64, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 1)
        self.layer2 = self._make_layer(128, 2)
        self.layer3 = self._make_layer(256, 2)
        self.layer4 = self._make_layer(512, 2)
        self.fc = nn.Linear(512, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes, stride):
        ds = None
        if stride != 1 or self.inplanes != planes:
            ds = nn.Sequential(conv_nobias(self.inplanes, planes, 1, stride, 0),
                               nn.BatchNorm2d(planes))
        first = BasicBlock(self.inplanes, planes, stride, ds)
        self.inplanes = planes
        return nn.Sequential(first, BasicBlock(planes, planes, 1, None))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if not self.small_input:
            x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return self.fc(x)


ARCHS = {"cnn": Cnn, "resnet18": ResNet18}


def build(arch, in_ch, h, w, classes, seed):
    torch.manual_seed(seed)
    return ARCHS[arch](in_ch, h, w, classes)


def schema(net):
    """(name, tensor) in model.h's order: parameters, then float buffers."""
    out = list(net.named_parameters())
    out += [(n, b) for n, b in net.named_buffers() if b.is_floating_point()]
    return out


def train(net, x, y, epochs, batch, lr, momentum, weight_decay, seed):
    """model_train(), step for step."""
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    loss_sum, correct = 0.0, 0
    for _ in range(epochs):
        loss_sum, correct = 0.0, 0
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            xb = x.index_select(0, idx)
            yb = y.index_select(0, idx)
            opt.zero_grad()
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            l = loss.item()
            loss.backward()
            opt.step()
            loss_sum += l * len(idx)
            correct += logits.argmax(1).eq(yb).sum().item()
    return loss_sum, correct


def main(argv):
    if len(argv) != 4 or argv[1] not in ARCHS:
        sys.stderr.write("usage: torch_ref.py cnn|resnet18 THREADS IMAGES\n")
        return 2
    arch, threads, images = argv[1], int(argv[2]), int(argv[3])
    if threads < 1 or images < 1:
        sys.stderr.write("torch_ref.py: THREADS and IMAGES must be >= 1\n")
        return 2
    torch.set_num_threads(threads)

    # Random data: throughput does not depend on the values.
    gen = torch.Generator().manual_seed(1)
    n = max(images, WARMUP)
    x = torch.rand(n, CHANNELS, SIDE, SIDE, generator=gen) * 2 - 1
    y = torch.randint(0, CLASSES, (n,), generator=gen)

    net = build(arch, CHANNELS, SIDE, SIDE, CLASSES, seed=1)
    train(net, x[:WARMUP], y[:WARMUP], 1, BATCH, LR, MOMENTUM, 0.0, seed=1)

    t0 = time.perf_counter()
    train(net, x[:images], y[:images], 1, BATCH, LR, MOMENTUM, 0.0, seed=2)
    seconds = time.perf_counter() - t0

    print(json.dumps({"arch": arch, "threads": threads, "images": images,
                      "seconds": round(seconds, 4),
                      "images_per_s": round(images / seconds, 2)}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
