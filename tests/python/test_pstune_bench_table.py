"""Tests for the pstune benchmark's aggregation (tests/bench/pstune_bench_table.py): runs laid out
as pstune_bench.sh leaves them, written by pstune's report from hand-made Optuna studies."""

import csv
import pathlib
import sys

import optuna

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "pstune"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))
import pstune_bench_table  # noqa: E402
from pstune.report import write_report  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
States = optuna.trial.TrialState
DISTS = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
         "optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam"])}


def make_run(out, name, merits, log_line=None):
    """merits: per trial a float (COMPLETE), "P" (PRUNED) or "F" (FAIL)."""
    study = optuna.create_study(direction="maximize", study_name=name)
    for i, m in enumerate(merits):
        params = {"lr": 10 ** (-1 - i % 3), "optimizer": ["sgd", "adam"][i % 2]}
        if m == "P":
            t = optuna.trial.create_trial(state=States.PRUNED, params=params,
                                          distributions=DISTS, intermediate_values={1: 0.5})
        elif m == "F":
            t = optuna.trial.create_trial(state=States.FAIL, params=params, distributions=DISTS)
        else:
            t = optuna.trial.create_trial(value=m, params=params, distributions=DISTS)
        study.add_trial(t)
    run = out / "runs" / name
    write_report(study, str(run), "accuracy")
    (run / "wall_s").write_text("600\n")
    if log_line:
        (run / "pstune.log").write_text("trials: 4 done\n" + log_line + "\n")
    return run


def test_table_and_plot_from_runs(tmp_path):
    make_run(tmp_path, "random_s1", [0.80, 0.85, "P", 0.84], "best: test accuracy 0.8800")
    make_run(tmp_path, "random_s2", [0.82, "F", 0.83, 0.86], "best: test accuracy 88.50%")
    make_run(tmp_path, "gp_s1", [0.81, 0.86, 0.89, 0.90], "test accuracy: 0.8990")
    (tmp_path / "runs" / "gp_s2").mkdir()  # an unfinished run: a note, not a failure
    assert pstune_bench_table.main(["--report", str(tmp_path), "--checkpoints", "2"]) == 0

    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert [(r["sampler"], r["seed"]) for r in rows] == [("random", "1"), ("random", "2"),
                                                         ("gp", "1")]
    # Failed trials do not count against the budget (pstune's --trials does not count them).
    assert [r["trials"] for r in rows] == ["4", "3", "4"]
    assert [r["best_after_2"] for r in rows] == ["0.85", "0.83", "0.86"]
    assert [r["best_after_4"] for r in rows] == ["0.85", "", "0.9"]
    assert [r["pruned"] for r in rows] == ["1", "0", "0"]
    assert [r["failed"] for r in rows] == ["0", "1", "0"]
    assert [r["test_accuracy"] for r in rows] == ["0.88", "0.885", "0.899"]
    assert rows[2]["best_trial"] == "3"

    md = (tmp_path / "bench.md").read_text()
    # random: after 2 trials mean(85, 83) = 84.00 ± 1.41; after 4: seed 1 only (seed 2 has 3
    # counted trials).
    assert ("| random | 2 | 84.00 ± 1.41 | 85.00 (1 of 2 seeds) | 88.25 ± 0.35 | 0.5 | 10.0 |"
            in md)
    assert "| GP (expected improvement) | 1 | 86.00 | 90.00 | 89.90 | 0.0 | 10.0 |" in md
    assert ("Best test accuracy: 89.90% (GP (expected improvement), seed 1: lr=0.1, "
            "optimizer=adam).") in md
    assert "default configuration's test accuracy: 88.0%" in md
    assert "gp_s2/trials.csv is missing" in md
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    assert pstune_bench_table.main(["--report", str(tmp_path)]) == 1
    assert "runs does not exist: run pstune_bench.sh first" in capsys.readouterr().err


def test_measured_default_configuration_is_the_baseline(tmp_path):
    """pstune_bench.sh's runs/default_s<seed>/test_accuracy files (the default
    configuration trained like the final retraining) replace --baseline and are
    not read as a sampler's runs."""
    make_run(tmp_path, "tpe_s1", [0.85, 0.88], "test accuracy 0.8950")
    for seed, acc in ((1, "0.8790"), (2, "0.8810"), (3, "not a number")):
        d = tmp_path / "runs" / f"default_s{seed}"
        d.mkdir()
        (d / "test_accuracy").write_text(acc + "\n")
    assert pstune_bench_table.main(["--report", str(tmp_path), "--baseline", "0.5"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert [r["sampler"] for r in rows] == ["tpe"]
    md = (tmp_path / "bench.md").read_text()
    assert "trained like the final retraining: test accuracy 87.90% / 88.10% (mean 88.00%)" in md
    assert "50.0%" not in md
    assert "default_s3/test_accuracy" in md       # the unreadable one is named
