"""pstune.cli: the `pstune` command line. Parses the flags, reads the space
file and runs pstune.runner.Driver. Exit status: 0 done, 1 the search failed
(the message says why), 2 a usage or space-file error, 128+N stopped by
signal N (rerun the same command to resume)."""

import argparse
import dataclasses
import math
import os
import shutil
import sys
from typing import List, Optional

from pstune.runner import PRUNERS, SAMPLERS, Driver, Options
from pstune.space import SpaceError, load_space

DESCRIPTION = """\
Hyper-parameter search on a running pskit shard cluster. Each trial trains in
its own namespace (STUDY-tN; with --folds K, STUDY-tN-f0 .. -f(K-1) side by
side) with --workers ps-worker processes and one evaluator; its merit is the
best evaluation the shards hold (the space file's metric). The study is kept
in Optuna's SQLite storage: rerun the same command to resume it. At the end
the best configuration is retrained: namespace STUDY-final, on all training
data (no folds, no holdout, no patience), for the trials' max_seconds (or
--retrain_seconds), its evaluator scoring the test set once at the end of the
run (eval interval = that time; ps-worker also scores the untrained model at
the start); that score is the reported test accuracy (--no_retrain skips
it). The results go to --out (trials.csv, trials.md, merit.png,
importance.png, best.json); the table is written right after the search, and
also when the search fails or is stopped.

Start a cluster with `psrun --workers 0` (it prints the shards), then e.g.
  pstune --space tools/pstune/examples/mlp_space.yaml --trials 20 --parallel 2 \\
      --shards 127.0.0.1:7000,127.0.0.1:7001 --sampler tpe --pruner median
"""


def _default_ps_worker() -> str:
    explicit = os.environ.get("PSTUNE_PS_WORKER")
    if explicit:
        return explicit
    bin_dir = os.environ.get("PSTUNE_BIN_DIR")   # set by the build's launcher
    if bin_dir and os.path.exists(os.path.join(bin_dir, "ps-worker")):
        return os.path.join(bin_dir, "ps-worker")
    return shutil.which("ps-worker") or "ps-worker"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pstune", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--space", required=True, metavar="FILE",
      help="the search-space file, YAML or JSON (format: NOTES/README, "
           "tools/pstune/examples/mlp_space.yaml)")
    a("--shards", required=True, metavar="HOST:PORT,...",
      help="the cluster's shards in shard order")
    a("--trials", type=int, default=20, metavar="N",
      help="the study ends with N finished (complete or pruned) trials, counting "
           "those of earlier runs (default 20)")
    a("--parallel", type=int, default=1, metavar="G", help="trials at once (default 1)")
    a("--workers", type=int, default=2, metavar="W",
      help="training workers per namespace, plus one evaluator (default 2)")
    a("--folds", type=int, default=0, metavar="K",
      help="K-fold cross-validation: K namespaces per trial in parallel, the "
           "evaluator of fold i scores fold i; merit = mean, spread = std "
           "(default 0: off)")
    a("--holdout", type=int, default=5, metavar="K",
      help="without --folds: train on (K-1)/K of the training data and validate on "
           "the rest (fold 0 of K), keeping the test set for the final score; 0: the "
           "evaluator scores what it scores by default (the test set) (default 5)")
    a("--study", default="pstune",
      help="the study's name; also the trials' namespace prefix (default pstune)")
    a("--out", default="pstune-out", metavar="DIR",
      help="results, logs and the default storage (default pstune-out)")
    a("--storage", default="", metavar="URL",
      help="Optuna storage URL (default sqlite:///DIR/study.db)")
    a("--sampler", choices=SAMPLERS, default="tpe",
      help="random, tpe (default), cmaes, nsga2 (evolutionary) or gp (Gaussian "
           "process + expected improvement)")
    a("--pruner", choices=PRUNERS, default="none",
      help="early stopping of poor trials: none (default), median, halving "
           "(successive halving) or hyperband")
    a("--seed", type=int, default=None, help="the sampler's seed")
    a("--startup_trials", type=int, default=10, metavar="N",
      help="tpe, gp (and cmaes, at most trials/4): random trials first (default 10)")
    a("--population", type=int, default=0, metavar="N",
      help="nsga2: the population size (default trials/4 within [4, 50])")
    a("--worker_command", default="", metavar="CMD",
      help="run CMD (split like a shell, no expansion) for every worker and the "
           "evaluator instead of ps-worker: it gets psrun's PSKIT_* environment "
           "(PSKIT_SHARDS, PSKIT_NAMESPACE, PSKIT_ROLE, RANK, WORLD_SIZE, ...) and the "
           "trial's flags as arguments")
    a("--ps_worker", default=None, metavar="PATH",
      help="the ps-worker binary (default: the one beside pstune, else on PATH)")
    a("--no_retrain", action="store_true",
      help="skip retraining the best configuration on all training data")
    a("--max_seconds", type=float, default=0.0, metavar="S",
      help="each trial's training time, in place of the space file's "
           "budget.max_seconds (default 0: the file's)")
    a("--retrain_seconds", type=float, default=0.0, metavar="S",
      help="the final retraining's training time (default 0: the trials' "
           "max_seconds)")
    a("--max_failures", type=int, default=5, metavar="N",
      help="stop after N failed trials in one run (default 5)")
    a("--drop_wait_s", type=float, default=90.0, metavar="S",
      help="how long a namespace whose killed workers still hold leases is retried "
           "before pstune gives up on dropping it (default 90)")
    a("--token_file", default="", help="the bearer token for the shards and workers")
    a("--tls_ca", default="", help="CA certificate (PEM) the shards are checked against")
    a("--tls_cert", default="", help="client certificate (PEM)")
    a("--tls_key", default="", help="client key (PEM)")
    a("--status_line", choices=("auto", "on", "off"), default="auto",
      help="the live one-line status: auto (when stderr is a terminal), on, off")
    # Hidden: how often the shards are read (tests use a short one).
    a("--poll_s", type=float, default=1.0, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        space = load_space(args.space)
    except SpaceError as e:
        print(f"pstune: {e}", file=sys.stderr)
        return 2
    for flag in ("max_seconds", "retrain_seconds"):
        v = getattr(args, flag)
        if not (v >= 0 and math.isfinite(v)):
            print(f"pstune: --{flag} {v:g}: give seconds > 0 (or 0: the default)",
                  file=sys.stderr)
            return 2
    if args.max_seconds > 0:
        space = dataclasses.replace(space, budget=dataclasses.replace(
            space.budget, max_seconds=args.max_seconds))
    shards = [s.strip() for s in args.shards.split(",") if s.strip()]
    for s in shards:
        host, sep, port = s.rpartition(":")
        if not sep or not host or not port.isdigit():
            print(f"pstune: --shards: {s!r} is not HOST:PORT", file=sys.stderr)
            return 2
    for flag in ("trials", "parallel", "workers", "startup_trials", "max_failures"):
        if getattr(args, flag) < 1:
            print(f"pstune: --{flag} must be >= 1, got {getattr(args, flag)}",
                  file=sys.stderr)
            return 2
    for flag, what in (("folds", "K-fold cross-validation"),
                       ("holdout", "validate on one K-th of the training data")):
        k = getattr(args, flag)
        if k < 0 or k == 1:
            print(f"pstune: --{flag} {k}: give K >= 2 ({what}) or 0 (off)",
                  file=sys.stderr)
            return 2
    if args.population != 0 and args.population < 2:
        print(f"pstune: --population {args.population}: give N >= 2 (or 0: "
              "trials/4 within [4, 50])", file=sys.stderr)
        return 2
    if not args.drop_wait_s >= 0 or not args.poll_s > 0:
        print("pstune: --drop_wait_s must be >= 0 (and --poll_s > 0)", file=sys.stderr)
        return 2
    opts = Options(
        space=space, shards=shards, trials=args.trials, parallel=args.parallel,
        workers=args.workers, folds=args.folds, holdout=args.holdout,
        study=args.study, storage=args.storage, out=args.out, sampler=args.sampler,
        pruner=args.pruner, seed=args.seed, population=args.population,
        startup_trials=args.startup_trials, worker_command=args.worker_command,
        ps_worker=args.ps_worker or ("" if args.worker_command else _default_ps_worker()),
        retrain=not args.no_retrain, retrain_seconds=args.retrain_seconds,
        max_failures=args.max_failures,
        drop_wait_s=args.drop_wait_s, token_file=args.token_file, tls_ca=args.tls_ca,
        tls_cert=args.tls_cert, tls_key=args.tls_key,
        poll_s=args.poll_s,
        status_line={"auto": None, "on": True, "off": False}[args.status_line])
    return Driver(opts).run()


if __name__ == "__main__":
    sys.exit(main())
