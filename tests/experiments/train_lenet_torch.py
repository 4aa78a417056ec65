#!/usr/bin/python3
"""Train a LeNet-5 with PyTorch on an IDX data set and export it to ONNX (CONVERT.md, (a)/(b)).

The architecture is the engine's zoo LeNet-5 (conv 1->6 k5 pad 2, ReLU, max 2; conv 6->16 k5,
ReLU, max 2; fc 400->120, ReLU, fc 120->84, ReLU, fc 84->10). Inputs are normalized as
(x/255 - mean) / std with the data set's constants (MNIST 0.1307/0.3081, Fashion 0.2860/0.3530),
the same as `dyn train`, so `dyn convert --preprocess-from mnist` gives the engine the same
preprocessing. 5,000 training images (seeded) are held out for validation; the epoch with the
best validation accuracy is exported. The test set is evaluated once, at the end, and printed.

usage: train_lenet_torch.py DATA_DIR OUT.onnx [--epochs 4] [--seed 1] [--fashion]
Runs on the CPU with 2 threads (a few minutes).
"""
import argparse
import copy
import gzip
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn


def read_idx(path):
    if not os.path.exists(path) and os.path.exists(path + ".gz"):
        path += ".gz"
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def accuracy(model, x, y):
    model.eval()
    ok = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            ok += (model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
    return ok / len(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fashion", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    mean, std = (0.2860, 0.3530) if a.fashion else (0.1307, 0.3081)
    norm = lambda p: torch.from_numpy(((p.astype(np.float32) / 255.0) - mean) / std)[:, None]
    xtr = norm(read_idx(os.path.join(a.data, "train-images-idx3-ubyte")))
    ytr = torch.from_numpy(read_idx(os.path.join(a.data, "train-labels-idx1-ubyte")).astype(np.int64))
    xte = norm(read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte")))
    yte = torch.from_numpy(read_idx(os.path.join(a.data, "t10k-labels-idx1-ubyte")).astype(np.int64))
    perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(a.seed))
    va, tr = perm[:5000], perm[5000:]
    xva, yva, xtr, ytr = xtr[va], ytr[va], xtr[tr], ytr[tr]
    model = lenet5()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs * ((len(xtr) + 63) // 64))
    best, best_acc = None, -1.0
    for ep in range(1, a.epochs + 1):
        model.train()
        order = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 64):
            idx = order[i:i + 64]
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, xva, yva)
        print(f"epoch {ep}: val {100 * acc:.2f}%", flush=True)
        if acc > best_acc:
            best, best_acc = copy.deepcopy(model.state_dict()), acc
    model.load_state_dict(best)
    model.eval()
    print(f"best val {100 * best_acc:.2f}%, test {100 * accuracy(model, xte, yte):.2f}%")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), a.out, opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
