#!/usr/bin/python3
"""tests/bench/staleness_study_report.py: the staleness study's bookkeeping.

staleness_study.sh calls it three ways:
  --parse ...        one run's logs and /metrics -> one JSON record on stdout
  --line FILE        that record -> one progress line
  --report DIR       DIR/runs/*.json -> DIR/study.csv, DIR/study.md and
                     DIR/study.png (accuracy against workers per rule;
                     needs python3-matplotlib, skipped with a note without it)
"""

import argparse
import csv
import glob
import json
import math
import os
import re
import statistics
import sys

RULE_ORDER = ["none", "inverse", "dcasgd-c", "dcasgd-a", "gem", "ssp:2", "sync",
              "sync:1", "easgd"]

SUMMARY = re.compile(r"worker summary: rank (\d+): (\d+) steps, (\d+) samples in ([\d.]+) s")
EVAL = re.compile(r"eval: [\d.]+ s accuracy ([\d.]+) loss ([\d.naif]+)")
BUCKET = re.compile(r'^pskit_server_staleness_updates_bucket\{(.*)\}\s+([\d.e+]+)')


def staleness_from_metrics(path):
    """Median (linear within its bucket) and mean staleness of all updates."""
    buckets = {}
    total_sum = 0.0
    count = 0.0
    with open(path) as f:
        for line in f:
            m = BUCKET.match(line)
            if m:
                le = re.search(r'le="([^"]+)"', m.group(1)).group(1)
                bound = math.inf if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + float(m.group(2))
            elif line.startswith("pskit_server_staleness_updates_sum"):
                total_sum += float(line.split()[-1])
            elif line.startswith("pskit_server_staleness_updates_count"):
                count += float(line.split()[-1])
    if count <= 0:
        return None, None
    half = count / 2
    lower, below = 0.0, 0.0
    median = None
    for bound in sorted(buckets):  # cumulative counts
        cum = buckets[bound]
        if cum >= half:
            if math.isinf(bound):
                median = lower
            elif cum == below:
                median = bound
            else:
                # bucket (lower, bound]; the first bucket (le=0) is exactly 0
                median = lower + (bound - lower) * (half - below) / (cum - below)
            break
        lower, below = bound, cum
    return median, total_sum / count


def parse(a):
    samples = 0
    ranks = 0
    diverged = 0  # workers stopped by a non-finite gradient (the shard refuses it)
    with open(a.workers_log) as f:
        for line in f:
            m = SUMMARY.search(line)
            if m:
                ranks += 1
                samples += int(m.group(3))
            elif "NaN and Inf are rejected" in line:
                diverged += 1
    if ranks + diverged != a.workers:
        sys.exit(f"staleness_study_report: {ranks} worker summaries and {diverged} diverged "
                 f"workers for {a.workers} workers in {a.workers_log}")
    acc = loss = None
    with open(a.eval_log) as f:
        for line in f:
            m = EVAL.search(line)
            if m:
                acc, loss = float(m.group(1)), float(m.group(2))
    if acc is None:
        sys.exit(f"staleness_study_report: no evaluation in {a.eval_log}")
    median, mean = staleness_from_metrics(a.metrics)
    rec = {
        "rule": a.rule, "workers": a.workers, "seed": a.seed, "epochs": a.epochs,
        "batch_size": a.batch_size, "lr": a.lr, "momentum": a.momentum,
        "diverged": diverged, "samples": samples, "wall_s": round(a.wall_s, 3),
        "samples_per_s": round(samples / a.wall_s, 1),
        "test_accuracy": acc, "test_loss": loss,
        "median_staleness": None if median is None else round(median, 2),
        "mean_staleness": None if mean is None else round(mean, 3),
    }
    print(json.dumps(rec))


def line(path):
    r = json.load(open(path))
    name = os.path.basename(path)[:-5]
    med = "n/a" if r["median_staleness"] is None else f'{r["median_staleness"]:.1f}'
    div = f', DIVERGED ({r["diverged"]} workers hit NaN)' if r.get("diverged") else ""
    print(f'{name}: accuracy {r["test_accuracy"]:.4f}, median staleness {med}, '
          f'{r["samples"]} samples in {r["wall_s"]:.1f} s ({r["samples_per_s"]:.0f}/s){div}')


def rule_key(rule):
    return (RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER), rule)


def report(out):
    recs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "runs", "*.json")))]
    if not recs:
        sys.exit(f"staleness_study_report: no runs in {out}/runs")
    recs.sort(key=lambda r: (rule_key(r["rule"]), r["workers"], r["seed"]))
    fields = ["rule", "workers", "seed", "epochs", "batch_size", "lr", "momentum", "diverged", "samples",
              "wall_s", "samples_per_s", "test_accuracy", "test_loss", "median_staleness",
              "mean_staleness"]
    with open(os.path.join(out, "study.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in recs:
            w.writerow({k: r[k] for k in fields})

    rules = sorted({r["rule"] for r in recs}, key=rule_key)
    ws = sorted({r["workers"] for r in recs})
    cell = {}
    for r in recs:
        cell.setdefault((r["rule"], r["workers"]), []).append(r)
    settings = {(r["epochs"], r["batch_size"], r["lr"], r["momentum"]) for r in recs}
    md = []
    if len(settings) == 1:
        e, b, lr, m = settings.pop()
        md.append(f"Settings: {e} epochs over each rank's slice ({e} x 60000 samples in all), "
                  f"batch {b}, server momentum SGD lr {lr} momentum {m}.\n")

    def table(title, fmt):
        md.append(f"{title}\n")
        md.append("| rule | " + " | ".join(f"W={w}" for w in ws) + " |")
        md.append("|---|" + "---|" * len(ws))
        for rule in rules:
            row = [fmt(cell[(rule, w)]) if (rule, w) in cell else "" for w in ws]
            md.append(f"| {rule} | " + " | ".join(row) + " |")
        md.append("")

    def acc(rs):
        a = [r["test_accuracy"] for r in rs]
        d = sum(1 for r in rs if r.get("diverged"))
        mark = f" ({d} diverged)" if d else ""
        if len(a) == 1:
            return f"{a[0]:.4f}{mark}"
        return (f"{statistics.mean(a):.4f} ± {statistics.stdev(a):.4f} "
                f"({min(a):.4f}-{max(a):.4f}){mark}")

    def stale(rs):
        s = [r["median_staleness"] for r in rs if r["median_staleness"] is not None]
        return f"{statistics.mean(s):.1f}" if s else "n/a"

    def speed(rs):
        return f'{statistics.mean(r["samples_per_s"] for r in rs):.0f}'

    n = max(len(v) for v in cell.values())
    table(f"Final test accuracy (mean ± std (min-max) over {n} seeds)" if n > 1 else
          "Final test accuracy (1 seed)", acc)
    table("Median staleness (versions behind, the shard's histogram)", stale)
    table("Samples/s (all workers, wall time of the run, 2 shared cores)", speed)
    # The closing note: which rule wins at the largest W, by how much over
    # `none`, and how far it is from one worker's accuracy.
    top = ws[-1]
    means = {rule: statistics.mean(r["test_accuracy"] for r in cell[(rule, top)])
             for rule in rules if (rule, top) in cell}
    ruled = {k: v for k, v in means.items() if k != "easgd"}  # easgd: the reference
    if top > 1 and ruled:
        best = max(ruled, key=ruled.get)
        note = f"At W={top} the best rule is `{best}`, {means[best]:.4f}"
        if "none" in means and best != "none":
            note += f", {means[best] - means['none']:+.4f} over `none` ({means['none']:.4f})"
        if ("none", 1) in cell:
            one = statistics.mean(r["test_accuracy"] for r in cell[("none", 1)])
            note += f", {one - means[best]:.4f} below one worker's {one:.4f}"
        if "easgd" in means:
            note += f"; `easgd` (the reference) {means['easgd']:.4f}"
        md.append(note + ".\n")
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write("\n".join(md))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("staleness_study_report: no matplotlib (apt-get install python3-matplotlib): "
              "no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for rule in rules:
        xs, ys, lo, hi = [], [], [], []
        for w in ws:
            if (rule, w) not in cell:
                continue
            a = [r["test_accuracy"] for r in cell[(rule, w)]]
            m = statistics.mean(a)
            xs.append(w)
            ys.append(m)
            lo.append(m - min(a))
            hi.append(max(a) - m)
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=rule,
                    linestyle="--" if rule == "easgd" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ws)
    ax.set_xticklabels([str(w) for w in ws])
    ax.set_xlabel("worker processes (same total samples)")
    ax.set_ylabel("final test accuracy")
    ax.set_title("Fashion-MNIST MLP: accuracy against workers per rule")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "study.png"))
    print(f"staleness_study: wrote {out}/study.csv, study.md, study.png")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parse", action="store_true")
    p.add_argument("--line")
    p.add_argument("--report")
    p.add_argument("--rule")
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--wall_s", type=float)
    p.add_argument("--workers_log")
    p.add_argument("--eval_log")
    p.add_argument("--metrics")
    a = p.parse_args()
    if a.parse:
        parse(a)
    elif a.line:
        line(a.line)
    elif a.report:
        report(a.report)
    else:
        p.error("give --parse, --line or --report")


if __name__ == "__main__":
    main()
