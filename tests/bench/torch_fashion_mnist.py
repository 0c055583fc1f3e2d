#!/usr/bin/python3
"""PyTorch baseline for ps-worker: the same MLP, optimizer and batch size on
Fashion-MNIST in one process; prints the time to a target test accuracy.

  /usr/bin/python3 tests/bench/torch_fashion_mnist.py [--threads 1] [--target 0.88]

Uses Debian's python3-torch (CPU). OPENBLAS_NUM_THREADS is set before torch
is imported: Debian's torch runs matrix products on OpenBLAS, whose threads
torch.set_num_threads does not control.
"""
import argparse
import gzip
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--target", type=float, default=0.88)
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--eval_interval_s", type=float, default=1.0)
parser.add_argument("--max_seconds", type=float, default=300)
parser.add_argument("--foreach", type=int, default=1,
                    help="Adam's multi-tensor (foreach) implementation: torch 1.13's "
                    "CPU default loops over the tensors, several times slower")
args = parser.parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
os.environ["OMP_NUM_THREADS"] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(1)


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def load(prefix):
    def find(name):
        p = os.path.join(args.data, name)
        return p if os.path.exists(p) else p + ".gz"
    x = read_idx(find(prefix + "-images-idx3-ubyte")).reshape(-1, 784)
    y = read_idx(find(prefix + "-labels-idx1-ubyte"))
    return (torch.from_numpy(x.astype(np.float32) / 255.0),
            torch.from_numpy(y.astype(np.int64)))


xtr, ytr = load("train")
xte, yte = load("t10k")
model = torch.nn.Sequential(
    torch.nn.Linear(784, 256), torch.nn.ReLU(),
    torch.nn.Linear(256, 128), torch.nn.ReLU(),
    torch.nn.Linear(128, 10))
opt = torch.optim.Adam(model.parameters(), lr=args.lr, foreach=bool(args.foreach))
loss_fn = torch.nn.CrossEntropyLoss()

start = time.time()
next_eval = start + args.eval_interval_s
samples = 0
epoch = 0
while True:
    perm = torch.randperm(xtr.shape[0])
    for b in range(0, xtr.shape[0] - args.batch + 1, args.batch):
        idx = perm[b:b + args.batch]
        opt.zero_grad()
        loss = loss_fn(model(xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
        samples += args.batch
        if time.time() >= next_eval:
            with torch.no_grad():
                acc = (model(xte).argmax(1) == yte).float().mean().item()
            t = time.time() - start
            print(f"{t:.1f} s epoch {epoch} test accuracy {acc:.4f}", flush=True)
            if acc >= args.target:
                print(f"torch: {args.target} reached after {t:.2f} s, "
                      f"{samples / t:.0f} samples/s, {args.threads} thread(s)")
                sys.exit(0)
            if t > args.max_seconds:
                print("torch: target not reached")
                sys.exit(1)
            next_eval = time.time() + args.eval_interval_s
    epoch += 1
