#!/usr/bin/python3
"""Trains a PyTorch model (the CNN of examples/python/fashion_mnist.py, or its
MLP) on Fashion-MNIST against pskit shards, as a worker or as the evaluator:
the Python counterpart of ps-worker, with the same launch variables.

  # two shards, then two workers and an evaluator (PSKIT_ROLE says which):
  export PSKIT_SHARDS=127.0.0.1:7000,127.0.0.1:7001
  RANK=0 WORLD_SIZE=2 examples/python/train_fashion_mnist.py &
  RANK=1 WORLD_SIZE=2 examples/python/train_fashion_mnist.py &
  PSKIT_ROLE=evaluator examples/python/train_fashion_mnist.py --target_accuracy 0.9

Rank and world come from RANK/WORLD_SIZE (torchrun), SLURM, Open MPI, PMI or
JOB_COMPLETION_INDEX + PSKIT_WORLD_SIZE; shards, namespace, role, token and
TLS from PSKIT_SHARDS, PSKIT_NAMESPACE, PSKIT_ROLE, PSKIT_TOKEN_FILE and
PSKIT_TLS_CA/CERT/KEY; metrics on PSKIT_METRICS_PORT (see pskit.torch). Each
worker trains on its own slice of the training set (fashion_mnist.shard);
the evaluator scores the shards' model on the test set and ends the job at
--target_accuracy or --patience. With --folds K --fold i (k-fold
cross-validation, ps-worker's rule: item j is in fold j mod K) the workers
train on the training set without fold i and the evaluator scores fold i. Exit status as ps-worker's: 0 done, 1
failed, 2 bad arguments or environment, 3 the evaluator's target was not
reached. Needs pskit on PYTHONPATH (build/python).
"""
import argparse
import logging
import os
import signal
import sys
import time

EXIT_FAILED, EXIT_USAGE, EXIT_TARGET_NOT_REACHED = 1, 2, 3


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    p.add_argument("--algorithm", choices=("downpour", "easgd"), default="downpour")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10, help="passes over this rank's slice")
    p.add_argument("--max_seconds", type=float, default=0, help="0: no limit")
    p.add_argument("--optimizer", default="adam", help="the shards' optimizer")
    p.add_argument("--lr", type=float, default=0.001, help="the shards' learning rate")
    p.add_argument("--n_push", type=int, default=1, help="downpour: push every n steps")
    p.add_argument("--n_fetch", type=int, default=1, help="downpour: pull every n steps")
    p.add_argument("--local_update", action="store_true",
                   help="downpour: also step the worker's own copy with the job's "
                        "optimizer between fetches (needs --n_fetch >= 2)")
    p.add_argument("--tau", type=int, default=4, help="easgd: steps between exchanges")
    p.add_argument("--alpha", type=float, default=None, help="easgd: default 0.9 / world")
    p.add_argument("--local_lr", type=float, default=0.05, help="easgd: local SGD rate")
    p.add_argument("--local_momentum", type=float, default=0.9, help="easgd")
    p.add_argument("--init", default="module",
                   help="module (rank 0's values), torch_default, glorot_uniform, "
                        "he_normal or zeros (see pskit.torch.ModelTensors.specs)")
    p.add_argument("--eval_interval_s", type=float, default=None,
                   help="evaluator: seconds between evaluations; default 10 for the "
                   "cnn (scoring the 10,000 test images takes it seconds of a core), "
                   "1 for the mlp")
    p.add_argument("--target_accuracy", type=float, default=0.0,
                   help="evaluator: end the job at this test accuracy")
    p.add_argument("--patience", type=int, default=0,
                   help="evaluator: end after this many evaluations without a new best")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenBLAS threads")
    p.add_argument("--seed", type=int, default=1, help="initial values and shuffling")
    p.add_argument("--log_interval_s", type=float, default=5.0)
    p.add_argument("--folds", type=int, default=0,
                   help="k-fold cross-validation: K >= 2 folds of the training set "
                        "(item j is in fold j mod K), with --fold; 0: off")
    p.add_argument("--fold", type=int, default=None,
                   help="with --folds K: the validation fold, 0 <= i < K; workers "
                        "train on the other folds, the evaluator scores this one "
                        "instead of the test set")
    args = p.parse_args(argv)
    # ps-worker's rules (--folds, --fold): a usage error (exit 2) otherwise.
    if args.folds == 0 and args.fold is not None:
        p.error(f"--fold {args.fold} needs --folds K (K >= 2 folds, --fold in [0, K))")
    if args.folds != 0 and args.folds < 2:
        p.error(f"--folds must be at least 2 (or 0: no cross-validation), got {args.folds}")
    if args.folds and args.fold is None:
        p.error(f"--folds {args.folds} needs --fold i, the validation fold, "
                f"0 <= i < {args.folds}")
    if args.folds and not 0 <= args.fold < args.folds:
        p.error(f"--fold must be in [0, {args.folds}) with --folds {args.folds}, "
                f"got {args.fold}")
    return args


def fold_name(args):
    """What the evaluator scores: "validation fold i of K", or "the test set"."""
    return (f"validation fold {args.fold} of {args.folds}" if args.folds
            else "the test set")


def local_optimizer(name, params, lr):
    import torch
    kinds = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD,
             "nesterov": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
             "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam,
             "adamw": torch.optim.AdamW}
    # foreach: one kernel per operation over all tensors; torch 1.13's default
    # on the CPU loops over them, which made Adam's step 8 ms for the MLP
    # (0.9 ms with foreach), longer than the step's forward and backward.
    kwargs = {"foreach": True}
    if name in ("momentum", "nesterov"):
        kwargs["momentum"] = 0.9
    if name == "nesterov":
        kwargs["nesterov"] = True
    return kinds[name](params, lr=lr, **kwargs)


def train(args, env, fm, pt, torch):
    x, y = fm.load("train", normalize=fm.NORMALIZE[args.model])
    if args.folds:
        x, y, _, _ = fm.fold_split(x, y, args.folds, args.fold)
    x, y = fm.shard(x, y, env.rank, env.world)
    if len(x) < args.batch_size:
        print(f"rank {env.rank} has {len(x)} samples, fewer than one batch of "
              f"{args.batch_size}", file=sys.stderr)
        return EXIT_USAGE
    model = getattr(fm, args.model)()
    config = pt.namespace_config(args.optimizer, lr=args.lr)
    loss_fn = torch.nn.functional.cross_entropy
    kept = f" (of all but {fold_name(args)})" if args.folds else ""
    print(f"rank {env.rank} of {env.world} ({env.rank_source}), {args.algorithm} on "
          f"{len(x)} samples{kept}, model {args.model}, shards {','.join(env.shards)}",
          flush=True)
    with pt.Session(model, env, config=config, init=args.init, seed=args.seed) as s:
        if args.algorithm == "downpour":
            opt = (local_optimizer(args.optimizer.lower(), model.parameters(), args.lr)
                   if args.local_update else None)
            strategy = pt.Downpour(s, n_push=args.n_push, n_fetch=args.n_fetch, optimizer=opt)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=args.local_lr,
                                  momentum=args.local_momentum, foreach=True)
            strategy = pt.EASGD(s, opt, tau=args.tau, alpha=args.alpha)
        g = torch.Generator().manual_seed(args.seed * 7919 + env.rank)
        start = time.monotonic()
        next_log = start + args.log_interval_s
        loss_sum, loss_n, stop = 0.0, 0, False
        for epoch in range(args.epochs):
            order = torch.randperm(len(x), generator=g)
            for b in range(0, len(x) - args.batch_size + 1, args.batch_size):
                idx = order[b:b + args.batch_size]
                model.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                strategy.step(loss, samples=len(idx))
                loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
                now = time.monotonic()
                if args.log_interval_s > 0 and now >= next_log:
                    print(f"rank{env.rank}: epoch {epoch} step {strategy.steps} "
                          f"{strategy.samples_per_s:.0f} samples/s loss "
                          f"{loss_sum / loss_n:.4f}", flush=True)
                    loss_sum, loss_n, next_log = 0.0, 0, now + args.log_interval_s
                stop = s.job_done or (args.max_seconds > 0 and now - start >= args.max_seconds)
                if stop:
                    break
            if stop:
                break
        print(f"worker summary: rank {env.rank}: {strategy.steps} steps, "
              f"{strategy.samples} samples in {time.monotonic() - start:.1f} s, "
              f"{strategy.samples_per_s:.0f} samples/s, last loss {loss.item():.4f}"
              f"{', ended by the evaluator' if s.job_done else ''}", flush=True)
    return 0


def evaluate(args, env, fm, pt):
    if args.folds:
        x, y = fm.load("train", normalize=fm.NORMALIZE[args.model])
        _, _, xt, yt = fm.fold_split(x, y, args.folds, args.fold)
        del x, y
    else:
        xt, yt = fm.load("test", normalize=fm.NORMALIZE[args.model])
    print(f"evaluator: scoring {fold_name(args)} ({len(xt)} samples)", flush=True)
    model = getattr(fm, args.model)()
    interval = args.eval_interval_s
    if interval is None:
        interval = 10.0 if args.model == "cnn" else 1.0
    # (loss, accuracy, samples): the shards record how many were scored.
    ev = pt.Evaluator(model, lambda m: (*fm.evaluate(m, xt, yt), len(xt)), env,
                      config=pt.namespace_config(args.optimizer, lr=args.lr),
                      init=args.init, seed=args.seed, interval_s=interval,
                      target_accuracy=args.target_accuracy, patience=args.patience,
                      max_seconds=args.max_seconds)
    s = ev.run()
    target = (f"reached after {s.seconds_to_target:.1f} s" if s.target_reached
              else "not reached")
    print(f"evaluator summary: {s.evaluations} evaluations in {s.seconds:.1f} s, best "
          f"accuracy {s.best_accuracy:.4f}, last {s.last_accuracy:.4f} (loss "
          f"{s.last_loss:.4f}), target {target}; ended: {s.reason}"
          f"{'; scored on ' + fold_name(args) if args.folds else ''}", flush=True)
    if args.target_accuracy > 0 and not s.target_reached:
        return EXIT_TARGET_NOT_REACHED
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv):
    args = parse_args(argv)
    # Before torch is imported: Debian's torch multiplies on OpenBLAS, whose
    # threads torch.set_num_threads does not control.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import torch
    import pskit
    import pskit.torch as pt
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fashion_mnist as fm

    # SIGTERM (psrun, SLURM, Kubernetes) stops like Ctrl-C: the worker
    # leaves the shards on its way out, as ps-worker does.
    signal.signal(signal.SIGTERM, _interrupt)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    env = None
    try:
        env = pt.launch_env()
        if env.role == "evaluator":
            if not (args.target_accuracy > 0 or args.patience > 0 or args.max_seconds > 0):
                raise ValueError("the evaluator needs a way to end the job: give "
                                 "--target_accuracy, --patience or --max_seconds")
            return evaluate(args, env, fm, pt)
        return train(args, env, fm, pt, torch)
    except (pt.LaunchError, ValueError, fm.DatasetError) as e:
        print(f"train_fashion_mnist: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (pskit.Error, TimeoutError) as e:
        print(f"train_fashion_mnist ({env.role} rank {env.rank}): {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # An evaluator stopped (psrun stops it once the workers are done)
        # has not seen its target, or it would have ended by itself: exit 3,
        # the verdict psrun and ps-worker's evaluator use.
        if env is not None and env.role == "evaluator" and args.target_accuracy > 0:
            print("train_fashion_mnist: evaluator stopped before the target accuracy "
                  f"{args.target_accuracy} was reached", file=sys.stderr)
            return EXIT_TARGET_NOT_REACHED
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
