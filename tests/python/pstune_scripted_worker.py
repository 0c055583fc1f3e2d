"""A worker command for pstune's tests (test_pstune_search.py): it trains
nothing, so searches are fast and their results known. Run by pstune
--worker_command with psrun's environment (PSKIT_SHARDS, PSKIT_NAMESPACE,
PSKIT_ROLE, RANK, WORLD_SIZE) and the trial's flags:

  --quality Q         the evaluator reports accuracy Q, loss 1 - Q, at
                      every evaluation
  --max_seconds S     the evaluator ends the job after S seconds
  --eval_interval_s I seconds between evaluations
  --folds K --fold i  (recorded in the evaluator's log line)
  --noise X           ignored (a parameter that makes configurations differ)
  --hold_below Q      an evaluator whose quality is below Q reports until it
                      is stopped (pruned), at most 120 s, so that pruning does
                      not race the trial's end on a loaded machine
  --ignore_term       ignore SIGTERM (only SIGKILL stops it)
  --hold_while PATH   the evaluator of any namespace but STUDY-t0 reports
                      while PATH exists (at most 120 s), so a test can catch
                      a trial running however busy the machine is

A worker registers (holding a lease on the namespace), heartbeats until the
job is over, and leaves; the evaluator declares a one-tensor model and
reports evaluations. Each process writes its environment's placement to
stdout, which pstune keeps in the trial's log."""

import argparse
import os
import signal
import sys
import time

import pskit


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quality", type=float, required=True)
    p.add_argument("--max_seconds", type=float, required=True)
    p.add_argument("--eval_interval_s", type=float, default=0.2)
    p.add_argument("--patience", type=int, default=0)
    p.add_argument("--folds", type=int, default=0)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--hold_below", type=float, default=0.0)
    p.add_argument("--ignore_term", action="store_true")
    p.add_argument("--hold_while", default="")
    a = p.parse_args()
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    env = os.environ
    ns, role = env["PSKIT_NAMESPACE"], env["PSKIT_ROLE"]
    print(f"scripted {role} rank {env['RANK']} of {env['WORLD_SIZE']} ns {ns} "
          f"folds {a.folds} fold {a.fold} pid {os.getpid()}", flush=True)
    c = pskit.Client(env["PSKIT_SHARDS"].split(","))
    c.declare(ns, pskit.namespace_config("sgd", lr=0.1),
              [pskit.tensor_spec("w", (4,), init="zeros")])
    start = time.monotonic()
    seconds = 120.0 if a.quality < a.hold_below else a.max_seconds

    def holding():
        return (a.hold_while and os.path.exists(a.hold_while) and
                not ns.endswith("-t0") and time.monotonic() - start < 120)
    if role == "worker":
        c.register_worker(f"scripted-{ns}-{env['RANK']}", ns)
        while time.monotonic() - start < max(seconds, 120) + 30:
            if c.heartbeat(ns):
                break
            time.sleep(0.2)
        c.leave()
        return 0
    while True:
        time.sleep(a.eval_interval_s)
        acc = a.quality
        done = time.monotonic() - start >= seconds and not holding()
        c.report_evaluation(ns, loss=1 - acc, accuracy=acc, samples=100, done=done,
                            reason="time limit" if done else "")
        if done:
            return 0


if __name__ == "__main__":
    sys.exit(main())
