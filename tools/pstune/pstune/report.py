"""pstune/report.py: a study's results as a table and plots, written next to the study.

    from pstune.report import write_report
    files = write_report(study, "results/mlp", "validation accuracy")

`write_report(study, out_dir, metric_name)` writes, into out_dir (created if missing):
  trials.csv      one row per trial, in trial order: trial, state (COMPLETE, PRUNED, FAIL,
                  RUNNING, WAITING), merit (the trial's value; empty unless COMPLETE), merit_std
                  (user attribute "merit_std", the spread over k folds; empty without it),
                  last_value and last_step (the last intermediate value reported and its step:
                  where a pruned trial stood when it was stopped), seconds (start to finish;
                  empty while running), then one column per parameter ("param:<name>").
  trials.md       the same as a markdown table (merit as "0.8912 ± 0.0031" with a spread), under
                  a summary: direction, counts per state, the best trial and its parameters;
                  notes say which plots were skipped and why.
  merit.png       each trial's merit against its number, the best-so-far line (in the study's
                  direction), pruned trials marked at their last reported value.
                  Skipped (with a note) while no trial has a merit.
  importance.png  Optuna's parameter importances (fANOVA, seeded: the same study gives the
                  same figure). Skipped (with a note) with fewer than 2 complete trials or
                  fewer than 2 parameters.
It returns the paths written, in that order. Every file is written to a temporary name and
renamed into place, so an interrupted report never leaves a half-written file. Plots are drawn
with matplotlib's Agg canvas (no display, no pyplot state); without matplotlib the plots are
skipped with a note.
"""

import csv
import importlib.util
import io
import math
import os
import tempfile
from typing import Any, Dict, List, Optional

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


def _atomic_write(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               dir=os.path.dirname(path) or ".")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the results from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.6g}"


def _param_text(value: Any) -> str:
    return _fmt(value) if isinstance(value, float) else str(value)


def _seconds(t: FrozenTrial) -> Optional[float]:
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return (t.datetime_complete - t.datetime_start).total_seconds()


def _last_intermediate(t: FrozenTrial):
    if not t.intermediate_values:
        return None, None
    step = max(t.intermediate_values)
    return step, t.intermediate_values[step]


def _merit(t: FrozenTrial) -> Optional[float]:
    return t.value if t.state == TrialState.COMPLETE else None


def _merit_std(t: FrozenTrial) -> Optional[float]:
    std = t.user_attrs.get("merit_std")
    try:
        return None if std is None else float(std)
    except (TypeError, ValueError):
        return None


def _param_names(trials: List[FrozenTrial]) -> List[str]:
    names: Dict[str, None] = {}
    for t in trials:
        for n in t.params:
            names.setdefault(n, None)
    return sorted(names)


def _rows(trials: List[FrozenTrial], names: List[str]) -> List[Dict[str, str]]:
    rows = []
    for t in trials:
        step, last = _last_intermediate(t)
        row = {
            "trial": str(t.number),
            "state": t.state.name,
            "merit": _fmt(_merit(t)),
            "merit_std": _fmt(_merit_std(t)) if t.state == TrialState.COMPLETE else "",
            "last_value": _fmt(last),
            "last_step": "" if step is None else str(step),
            "seconds": "" if _seconds(t) is None else f"{_seconds(t):.1f}",
        }
        for n in names:
            row["param:" + n] = _param_text(t.params[n]) if n in t.params else ""
        rows.append(row)
    return rows


def _best(study: optuna.Study, trials: List[FrozenTrial]) -> Optional[FrozenTrial]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    key = (lambda t: t.value) if study.direction == StudyDirection.MINIMIZE else (
        lambda t: -t.value)
    return min(complete, key=key)


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _atomic_write(path, buf.getvalue())


def _plot_merit(study: optuna.Study, trials: List[FrozenTrial], metric_name: str,
                path: str) -> None:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    complete = [t for t in trials if _merit(t) is not None and math.isfinite(_merit(t))]
    xs = [t.number for t in complete]
    ys = [t.value for t in complete]
    errs = [_merit_std(t) or 0.0 for t in complete]
    if any(errs):
        ax.errorbar(xs, ys, yerr=errs, fmt="o", color="tab:blue", ms=4, capsize=2,
                    label="complete trial (± spread over folds)")
    else:
        ax.plot(xs, ys, "o", color="tab:blue", ms=4, label="complete trial")
    pruned = [(t.number, _last_intermediate(t)[1]) for t in trials
              if t.state == TrialState.PRUNED and _last_intermediate(t)[1] is not None]
    if pruned:
        ax.plot([p[0] for p in pruned], [p[1] for p in pruned], "x", color="tab:red", ms=6,
                label="pruned (last reported value)")
    maximise = study.direction == StudyDirection.MAXIMIZE
    best_x, best_y, best = [], [], None
    for t in complete:
        if best is None or (t.value > best if maximise else t.value < best):
            best = t.value
        best_x.append(t.number)
        best_y.append(best)
    if best_x:
        # Extend the line to the last trial so the plateau is visible.
        last = trials[-1].number
        if last > best_x[-1]:
            best_x.append(last)
            best_y.append(best_y[-1])
        ax.step(best_x, best_y, where="post", color="tab:green", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric_name)
    ax.set_title(f"{study.study_name}: {metric_name} per trial "
                 f"({'higher' if maximise else 'lower'} is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _plot_importance(importances: Dict[str, float], metric_name: str, path: str) -> None:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    names = list(importances)[::-1]  # most important at the top
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel(f"importance for {metric_name} (fANOVA, sums to 1)")
    ax.set_title("parameter importances")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_report(study: optuna.Study, out_dir: str, metric_name: str) -> List[str]:
    """Writes trials.csv, trials.md, merit.png and importance.png (see the module doc) into
    out_dir and returns the paths written. Raises OSError when out_dir cannot be written."""
    os.makedirs(out_dir, exist_ok=True)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    names = _param_names(trials)
    rows = _rows(trials, names)
    written: List[str] = []
    notes: List[str] = []

    columns = ["trial", "state", "merit", "merit_std", "last_value", "last_step", "seconds"] + [
        "param:" + n for n in names]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = os.path.join(out_dir, "trials.csv")
    _atomic_write(csv_path, buf.getvalue().encode())
    written.append(csv_path)

    # Plots first, so trials.md can say which were skipped.
    plots: List[str] = []
    have_mpl = importlib.util.find_spec("matplotlib") is not None
    if not have_mpl:
        notes.append("plots skipped: matplotlib is not installed "
                     "(Debian: apt-get install python3-matplotlib)")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if have_mpl:
        has_merit = any(_merit(t) is not None and math.isfinite(_merit(t)) for t in trials)
        has_pruned_value = any(t.state == TrialState.PRUNED and t.intermediate_values
                               for t in trials)
        if has_merit or has_pruned_value:
            path = os.path.join(out_dir, "merit.png")
            _plot_merit(study, trials, metric_name, path)
            plots.append(path)
        else:
            notes.append("merit.png skipped: no trial has a merit yet")
        if len(complete) < 2:
            notes.append(f"importance.png skipped: parameter importances need at least 2 "
                         f"complete trials, the study has {len(complete)}")
        elif len(names) < 2:
            notes.append(f"importance.png skipped: parameter importances need at least 2 "
                         f"parameters, the study has {len(names)}")
        else:
            try:
                importances = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
            except (ValueError, RuntimeError) as e:
                importances = None
                notes.append(f"importance.png skipped: Optuna could not compute parameter "
                             f"importances: {e}")
            if importances is not None and len(importances) < 2:
                notes.append("importance.png skipped: fewer than 2 parameters are present in "
                             "every complete trial")
            elif importances is not None:
                path = os.path.join(out_dir, "importance.png")
                _plot_importance(importances, metric_name, path)
                plots.append(path)

    counts = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    lines = [f"# Study {study.study_name}", ""]
    direction = "maximise" if study.direction == StudyDirection.MAXIMIZE else "minimise"
    lines.append(f"Merit: {metric_name} ({direction}). Trials: {len(trials)} "
                 f"({counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
                 f"{counts[TrialState.FAIL]} failed"
                 + (f", {counts[TrialState.RUNNING]} running" if counts[TrialState.RUNNING]
                    else "") + ").")
    lines.append("")
    best = _best(study, trials)
    if not trials:
        lines.append("No trials yet: the study is empty.")
    elif best is None:
        lines.append("No complete trial yet: no best configuration.")
    else:
        params = ", ".join(f"{n}={_param_text(v)}" for n, v in sorted(best.params.items()))
        std = _merit_std(best)
        merit = _fmt(best.value) + (f" ± {_fmt(std)}" if std is not None else "")
        lines.append(f"Best: trial {best.number}, {metric_name} {merit} ({params}).")
    if len(trials) == 1:
        lines.append("")
        lines.append("Only one trial: there is no search to compare yet.")
    if trials:
        lines.append("")
        header = ["trial"] + names + [metric_name, "seconds", "state"]
        lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
        lines.append("|" + "|".join("---:" if i == 0 else "---" for i in range(len(header)))
                     + "|")
        for t, row in zip(trials, rows):
            merit = row["merit"]
            if merit and row["merit_std"]:
                merit += " ± " + row["merit_std"]
            elif t.state == TrialState.PRUNED and row["last_value"]:
                merit = f"({row['last_value']} at step {row['last_step']})"
            cells = [row["trial"]] + [row["param:" + n] for n in names] + [
                merit, row["seconds"], row["state"]]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        if counts[TrialState.PRUNED]:
            lines.append("")
            lines.append("A pruned trial's merit column shows, in parentheses, the last value "
                         "it reported and at which step.")
    if plots:
        lines.append("")
        lines.extend(f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})"
                     for p in plots)
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"- {n}" for n in notes)
    md_path = os.path.join(out_dir, "trials.md")
    _atomic_write(md_path, ("\n".join(lines) + "\n").encode())
    written.append(md_path)
    return written + plots
