#!/usr/bin/python3
"""tests/bench/pstune_bench_table.py: the pstune benchmark's table and plot.

pstune_bench.sh runs one search per sampler and seed into DIR/runs/<sampler>_s<seed>/ (pstune's
--out: trials.csv and trials.md as pstune/report.py writes them, pstune.log its output,
wall_s the run's wall time). This script reads them all and writes
  DIR/bench.csv  one row per run: sampler, seed, trials (finished), complete, pruned, failed,
                 the best merit after each checkpoint of trials, the best trial, its test
                 accuracy (when pstune reported one) and the wall time;
  DIR/bench.md   per sampler, mean ± standard deviation over seeds of the best validation merit
                 after k trials (k at the checkpoints), the best configuration's test accuracy,
                 pruned trials and wall time; then one line per run with its best configuration;
  DIR/bench.png  best-so-far merit against trials per sampler (mean over seeds, band from the
                 worst to the best seed); skipped with a note without matplotlib.

    tests/bench/pstune_bench_table.py --report DIR [--checkpoints 5,10,20] [--baseline 0.88]

The baseline is the default configuration's test accuracy: the mean of DIR/runs/default_s<seed>/
test_accuracy (pstune_bench.sh trains it like the final retraining) when there are any, else
--baseline.

"Trials" counts finished trials (COMPLETE or PRUNED, as pstune's --trials budget does; FAIL
ones, lost to the infrastructure, are counted apart) in trial-number order; the best so far
only moves on COMPLETE ones. A mean over fewer seeds than the sampler has (a run that ended
short of k trials) says "(n of N seeds)". The direction comes from trials.md ("Merit: NAME
(maximise)."); --direction overrides it. The test accuracy of a run's best configuration is
read from DIR/runs/<run>/best.json ({"test_accuracy": 0.89...}) when pstune writes one, else
from the last line of pstune.log that says "test accuracy" followed by a number (a number above
1 is a percentage).
"""

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys

SAMPLER_ORDER = ["random", "tpe", "gp", "cmaes", "nsga2"]
SAMPLER_LABEL = {"random": "random", "tpe": "TPE", "gp": "GP (expected improvement)",
                 "cmaes": "CMA-ES", "nsga2": "NSGA-II (evolutionary)"}
RUN_DIR = re.compile(r"^(?P<sampler>[a-z0-9]+)_s(?P<seed>\d+)$")
DIRECTION = re.compile(r"^Merit: (?P<name>.*) \((?P<dir>maximise|minimise)\)\.", re.M)
TEST_ACC = re.compile(r"test accuracy\D{0,20}?(\d+(?:\.\d+)?)\s*(%?)", re.I)
COUNTED = ("COMPLETE", "PRUNED")


class BenchError(Exception):
    """A run directory that cannot be read: the message says which and why."""


def read_run(path, direction=None):
    """One run directory -> dict: merits (best-so-far list per finished trial), counts,
    best trial and params, test accuracy, wall time, direction and metric name."""
    csv_path = os.path.join(path, "trials.csv")
    if not os.path.exists(csv_path):
        raise BenchError(f"{csv_path} is missing: the run did not finish (rerun "
                         f"pstune_bench.sh, it resumes), or remove {path}")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"trial", "state", "merit"}
    if rows and not need <= set(rows[0]):
        raise BenchError(f"{csv_path} lacks the columns {sorted(need - set(rows[0]))}: "
                         f"not a pstune trials.csv")
    metric = "merit"
    md_path = os.path.join(path, "trials.md")
    if os.path.exists(md_path):
        with open(md_path) as f:
            m = DIRECTION.search(f.read())
        if m:
            metric = m.group("name")
            direction = direction or ("maximize" if m.group("dir") == "maximise" else "minimize")
    direction = direction or "maximize"
    maximise = direction == "maximize"
    rows.sort(key=lambda r: int(r["trial"]))
    failed = sum(r["state"] == "FAIL" for r in rows)
    rows = [r for r in rows if r["state"] in COUNTED]
    curve, best, best_row = [], None, None
    for r in rows:
        if r["state"] == "COMPLETE" and r["merit"] != "":
            v = float(r["merit"])
            if math.isfinite(v) and (best is None or (v > best if maximise else v < best)):
                best, best_row = v, r
        curve.append(best)
    run = {
        "curve": curve,
        "trials": len(rows),
        "complete": sum(r["state"] == "COMPLETE" for r in rows),
        "pruned": sum(r["state"] == "PRUNED" for r in rows),
        "failed": failed,
        "best": best,
        "best_trial": None if best_row is None else int(best_row["trial"]),
        "best_params": {} if best_row is None else {
            k[len("param:"):]: v for k, v in best_row.items()
            if k.startswith("param:") and v != ""},
        "test_accuracy": read_test_accuracy(path),
        "wall_s": None,
        "direction": direction,
        "metric": metric,
    }
    wall = os.path.join(path, "wall_s")
    if os.path.exists(wall):
        with open(wall) as f:
            try:
                run["wall_s"] = float(f.read().strip())
            except ValueError:
                pass
    return run


def read_test_accuracy(path):
    best_json = os.path.join(path, "best.json")
    if os.path.exists(best_json):
        try:
            with open(best_json) as f:
                value = json.load(f).get("test_accuracy")
            if value is not None:
                return float(value)
        except (ValueError, OSError, AttributeError, TypeError):
            pass
    log = os.path.join(path, "pstune.log")
    if not os.path.exists(log):
        return None
    found = None
    with open(log, errors="replace") as f:
        for line in f:
            for m in TEST_ACC.finditer(line):
                v = float(m.group(1))
                found = v / 100 if (m.group(2) == "%" or v > 1) else v
    return found


def best_at(curve, k):
    """Best merit after the first k finished trials (None when none completed by then, or
    the run has fewer than k)."""
    if k > len(curve):
        return None
    return curve[k - 1]


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0,
            len(values))


def fmt_ms(values, pct):
    m, s, n = mean_std(values)
    if m is None:
        return "-"
    scale = 100 if pct else 1
    text = f"{m * scale:.2f}" if pct else f"{m:.4g}"
    if n > 1:
        text += f" ± {s * scale:.2f}" if pct else f" ± {s:.2g}"
    if n < len(values):
        text += f" ({n} of {len(values)} seeds)"
    return text


def sampler_key(name):
    return (SAMPLER_ORDER.index(name) if name in SAMPLER_ORDER else len(SAMPLER_ORDER), name)


def collect(out, direction=None):
    runs_dir = os.path.join(out, "runs")
    if not os.path.isdir(runs_dir):
        raise BenchError(f"{runs_dir} does not exist: run pstune_bench.sh first (--out {out})")
    runs, problems = {}, []
    for name in sorted(os.listdir(runs_dir)):
        m = RUN_DIR.match(name)
        if (not m or m.group("sampler") == "default"
                or not os.path.isdir(os.path.join(runs_dir, name))):
            continue
        try:
            run = read_run(os.path.join(runs_dir, name), direction)
        except BenchError as e:
            problems.append(str(e))
            continue
        runs[(m.group("sampler"), int(m.group("seed")))] = run
    return runs, problems


def read_defaults(out):
    """The default configuration's test accuracies, one per seed run
    (runs/default_s<seed>/test_accuracy), in seed order, and the files that
    could not be read."""
    runs_dir, found, problems = os.path.join(out, "runs"), [], []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        m = RUN_DIR.match(name)
        path = os.path.join(runs_dir, name, "test_accuracy")
        if m and m.group("sampler") == "default" and os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            try:
                found.append((int(m.group("seed")), float(text)))
            except ValueError:
                problems.append(f"{path} holds {text[:40]!r}, not an accuracy: left out")
    return [v for _, v in sorted(found)], problems


def write_report(out, checkpoints, baseline, direction=None):
    runs, problems = collect(out, direction)
    defaults, default_problems = read_defaults(out)
    problems += default_problems
    if defaults:
        baseline = statistics.fmean(defaults)
    if not runs:
        raise BenchError(f"no finished run under {out}/runs" +
                         ("".join(f"\n  {p}" for p in problems)))
    samplers = sorted({s for s, _ in runs}, key=sampler_key)
    any_run = next(iter(runs.values()))
    metric, maximise = any_run["metric"], any_run["direction"] == "maximize"
    pct = maximise and all(r["best"] is None or 0 <= r["best"] <= 1 for r in runs.values()) \
        and "acc" in metric.lower()
    budget = max(r["trials"] for r in runs.values())
    checkpoints = sorted({k for k in checkpoints if 0 < k < budget} | {budget})

    # bench.csv
    csv_path = os.path.join(out, "bench.csv")
    cols = (["sampler", "seed", "trials", "complete", "pruned", "failed"]
            + [f"best_after_{k}" for k in checkpoints]
            + ["best_trial", "test_accuracy", "wall_s", "best_params"])
    with open(csv_path + ".tmp", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for (s, seed), r in sorted(runs.items(), key=lambda kv: (sampler_key(kv[0][0]),
                                                                  kv[0][1])):
            w.writerow([s, seed, r["trials"], r["complete"], r["pruned"], r["failed"]]
                       + ["" if best_at(r["curve"], k) is None else f"{best_at(r['curve'], k):.6g}"
                          for k in checkpoints]
                       + ["" if r["best_trial"] is None else r["best_trial"],
                          "" if r["test_accuracy"] is None else f"{r['test_accuracy']:.6g}",
                          "" if r["wall_s"] is None else f"{r['wall_s']:.0f}",
                          json.dumps(r["best_params"], sort_keys=True)])
    os.replace(csv_path + ".tmp", csv_path)

    # bench.md
    unit = " (%)" if pct else ""
    lines = [f"# pstune benchmark: best {metric} against trials", ""]
    lines.append(f"Mean ± standard deviation over seeds of the best {metric}{unit} after k "
                 f"finished trials ({'higher' if maximise else 'lower'} is better); test "
                 f"accuracy{' (%)' if pct else ''}: the best configuration retrained on all "
                 f"training data and scored once on the test set.")
    lines.append("")
    header = (["sampler", "seeds"] + [f"after {k}" for k in checkpoints]
              + ["test accuracy", "pruned", "wall (min)"])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|---:|" + "|".join("---:" for _ in header[2:]) + "|")
    for s in samplers:
        mine = [r for (name, _), r in runs.items() if name == s]
        cells = [SAMPLER_LABEL.get(s, s), str(len(mine))]
        cells += [fmt_ms([best_at(r["curve"], k) for r in mine], pct) for k in checkpoints]
        cells.append(fmt_ms([r["test_accuracy"] for r in mine], pct))
        cells.append(f"{statistics.fmean(r['pruned'] for r in mine):.1f}")
        walls = [r["wall_s"] / 60 for r in mine if r["wall_s"] is not None]
        cells.append(f"{statistics.fmean(walls):.1f}" if walls else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if defaults:
        lines.append("")
        lines.append("The default configuration (784-256-128-10, adam, lr 0.001, batch 64), "
                     "trained like the final retraining: test accuracy "
                     + " / ".join(f"{v * 100:.2f}%" for v in defaults)
                     + f" (mean {baseline * 100:.2f}%).")
    elif baseline is not None:
        lines.append("")
        lines.append(f"The default configuration's test accuracy: {baseline * 100:.1f}%.")
    tested = [(r["test_accuracy"], s, seed) for (s, seed), r in runs.items()
              if r["test_accuracy"] is not None]
    if tested:
        acc, s, seed = max(tested)
        params = ", ".join(f"{k}={v}" for k, v in sorted(runs[(s, seed)]["best_params"].items()))
        lines.append(f"Best test accuracy: {acc * 100:.2f}% ({SAMPLER_LABEL.get(s, s)}, seed "
                     f"{seed}: {params}).")
    lines.append("")
    lines.append("Each run's best configuration:")
    lines.append("")
    for (s, seed), r in sorted(runs.items(), key=lambda kv: (sampler_key(kv[0][0]), kv[0][1])):
        best = "-" if r["best"] is None else (f"{r['best'] * 100:.2f}%" if pct
                                              else f"{r['best']:.4g}")
        test = ("" if r["test_accuracy"] is None
                else f", test accuracy {r['test_accuracy'] * 100:.2f}%")
        params = ", ".join(f"{k}={v}" for k, v in sorted(r["best_params"].items()))
        lines.append(f"- {s} seed {seed}: {r['trials']} trials ({r['pruned']} pruned, "
                     f"{r['failed']} failed), best {best} at trial {r['best_trial']}{test}"
                     + (f" ({params})" if params else ""))
    notes = list(problems)
    png_path = os.path.join(out, "bench.png")
    try:
        plot(runs, samplers, metric, maximise, pct, baseline, png_path)
        lines.append("")
        lines.append("![best so far against trials](bench.png)")
    except ImportError:
        notes.append("bench.png skipped: matplotlib is not installed "
                     "(apt-get install python3-matplotlib)")
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"- {n}" for n in notes)
    md_path = os.path.join(out, "bench.md")
    with open(md_path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(md_path + ".tmp", md_path)
    return [csv_path, md_path] + ([png_path] if os.path.exists(png_path) else [])


def plot(runs, samplers, metric, maximise, pct, baseline, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    scale = 100 if pct else 1
    for s in samplers:
        curves = [r["curve"] for (name, _), r in runs.items() if name == s]
        n = max(len(c) for c in curves)
        xs, mean, lo, hi = [], [], [], []
        for k in range(1, n + 1):
            vals = [c[k - 1] for c in curves if k <= len(c) and c[k - 1] is not None]
            if not vals:
                continue
            xs.append(k)
            mean.append(statistics.fmean(vals) * scale)
            lo.append(min(vals) * scale)
            hi.append(max(vals) * scale)
        if not xs:
            continue
        line, = ax.plot(xs, mean, label=f"{SAMPLER_LABEL.get(s, s)} ({len(curves)} seeds)")
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    if baseline is not None and pct:
        ax.axhline(baseline * scale, color="grey", linestyle="--", linewidth=1,
                   label=f"default configuration (test) {baseline * 100:.1f}%")
    ax.set_xlabel("finished trials")
    ax.set_ylabel(f"best {metric} so far" + (" (%)" if pct else ""))
    ax.set_title(f"best {metric} against trials (mean over seeds, band: worst to best seed)",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right" if maximise else "upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png")
    os.replace(path + ".tmp.png", path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", metavar="DIR", required=True,
                        help="the benchmark's --out directory (holds runs/)")
    parser.add_argument("--checkpoints", default="5,10,20",
                        help="trial counts at which the table shows the best so far; the "
                             "budget (the longest run) is always added [5,10,20]")
    parser.add_argument("--baseline", type=float, default=0.88,
                        help="the default configuration's test accuracy, for the table and the "
                             "plot (a fraction; 0 leaves it out) [0.88]")
    parser.add_argument("--direction", choices=["maximize", "minimize"],
                        help="override the direction read from each run's trials.md")
    args = parser.parse_args(argv)
    try:
        checkpoints = [int(k) for k in args.checkpoints.split(",") if k.strip()]
    except ValueError:
        parser.error(f"--checkpoints wants comma-separated trial counts, got "
                     f"'{args.checkpoints}'")
    try:
        files = write_report(args.report, checkpoints, args.baseline or None, args.direction)
    except BenchError as e:
        print(f"pstune_bench_table: {e}", file=sys.stderr)
        return 1
    for f in files:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
