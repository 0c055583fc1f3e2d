"""Tests for pstune's report (tools/pstune/pstune/report.py): the table and plots a study
leaves next to it. In-memory Optuna studies built by hand; no shards."""

import csv
import datetime
import pathlib
import sys

import optuna
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools" / "pstune"))
from pstune.report import write_report  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

States = optuna.trial.TrialState
DISTS = {
    "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    "hidden": optuna.distributions.IntDistribution(32, 512, step=32),
    "optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam"]),
}
T0 = datetime.datetime(2026, 11, 30, 12, 0, 0)


def add(study, number, state, value=None, params=None, intermediate=None, seconds=10.0,
        merit_std=None):
    params = params or {"lr": 10 ** (-1 - number % 3), "hidden": 32 * (1 + number % 5),
                        "optimizer": ["sgd", "adam"][number % 2]}
    trial = optuna.trial.create_trial(
        state=state, value=value, params=params, distributions=DISTS,
        intermediate_values=intermediate or {},
        user_attrs={} if merit_std is None else {"merit_std": merit_std})
    trial.datetime_start = T0  # a known duration (create_trial stamps both with now)
    trial.datetime_complete = T0 + datetime.timedelta(seconds=seconds)
    study.add_trial(trial)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_mixed_study_writes_every_file(tmp_path):
    study = optuna.create_study(direction="maximize", study_name="mlp")
    add(study, 0, States.COMPLETE, 0.81, intermediate={1: 0.7, 2: 0.81}, seconds=12.5)
    add(study, 1, States.PRUNED, intermediate={1: 0.42, 3: 0.55})
    add(study, 2, States.COMPLETE, 0.87, merit_std=0.004, seconds=30)
    add(study, 3, States.FAIL)
    add(study, 4, States.COMPLETE, 0.85)
    add(study, 5, States.COMPLETE, 0.79)
    files = write_report(study, str(tmp_path / "out"), "validation accuracy")
    names = [pathlib.Path(f).name for f in files]
    assert names == ["trials.csv", "trials.md", "merit.png", "importance.png"]
    for f in files:
        assert pathlib.Path(f).stat().st_size > 0
    for png in files[2:]:
        assert pathlib.Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing else (no temporary files) is left behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)

    rows = read_csv(files[0])
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert [r["state"] for r in rows] == ["COMPLETE", "PRUNED", "COMPLETE", "FAIL", "COMPLETE",
                                          "COMPLETE"]
    assert [r["merit"] for r in rows] == ["0.81", "", "0.87", "", "0.85", "0.79"]
    assert rows[2]["merit_std"] == "0.004" and rows[0]["merit_std"] == ""
    assert (rows[1]["last_value"], rows[1]["last_step"]) == ("0.55", "3")
    assert rows[2]["param:optimizer"] == "sgd" and rows[2]["param:hidden"] == "96"
    assert float(rows[0]["param:lr"]) == pytest.approx(0.1)
    assert [r["seconds"] for r in rows[:3]] == ["12.5", "10.0", "30.0"]

    md = pathlib.Path(files[1]).read_text()
    assert "4 complete, 1 pruned, 1 failed" in md
    assert "Best: trial 2, validation accuracy 0.87 ± 0.004" in md
    assert "| 2 | 96 | 0.001 | sgd | 0.87 ± 0.004 | 30.0 | COMPLETE |" in md
    assert "(0.55 at step 3)" in md and "PRUNED" in md and "FAIL" in md
    assert "![merit](merit.png)" in md and "![importance](importance.png)" in md
    assert "skipped" not in md


def test_minimise_picks_the_lowest(tmp_path):
    study = optuna.create_study(direction="minimize", study_name="loss")
    for i, v in enumerate([0.9, 0.3, 0.5]):
        add(study, i, States.COMPLETE, v)
    files = write_report(study, str(tmp_path), "validation loss")
    assert "Best: trial 1, validation loss 0.3 (" in pathlib.Path(files[1]).read_text()


def test_empty_study_says_so(tmp_path):
    study = optuna.create_study(study_name="empty")
    files = write_report(study, str(tmp_path), "validation accuracy")
    assert [pathlib.Path(f).name for f in files] == ["trials.csv", "trials.md"]
    assert read_csv(files[0]) == []
    header = pathlib.Path(files[0]).read_text().splitlines()[0]
    assert header.startswith("trial,state,merit,merit_std,last_value,last_step,seconds")
    md = pathlib.Path(files[1]).read_text()
    assert "No trials yet: the study is empty." in md
    assert "merit.png skipped: no trial has a merit yet" in md
    assert "importance.png skipped" in md


def test_one_trial_plots_its_merit_and_skips_importances_with_a_note(tmp_path):
    study = optuna.create_study(direction="maximize", study_name="one")
    add(study, 0, States.COMPLETE, 0.88)
    files = write_report(study, str(tmp_path), "validation accuracy")
    assert [pathlib.Path(f).name for f in files] == ["trials.csv", "trials.md", "merit.png"]
    rows = read_csv(files[0])
    assert len(rows) == 1 and rows[0]["state"] == "COMPLETE" and rows[0]["merit"] == "0.88"
    md = pathlib.Path(files[1]).read_text()
    assert "Only one trial" in md
    assert ("importance.png skipped: parameter importances need at least 2 complete trials, "
            "the study has 1") in md


def test_one_failed_trial_has_no_best_and_no_plots(tmp_path):
    study = optuna.create_study(study_name="failed")
    add(study, 0, States.FAIL)
    files = write_report(study, str(tmp_path), "validation accuracy")
    assert [pathlib.Path(f).name for f in files] == ["trials.csv", "trials.md"]
    assert [r["state"] for r in read_csv(files[0])] == ["FAIL"]
    md = pathlib.Path(files[1]).read_text()
    assert "No complete trial yet" in md and "merit.png skipped" in md


def test_one_parameter_skips_importances(tmp_path):
    study = optuna.create_study(study_name="1d")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=3)
    files = write_report(study, str(tmp_path), "loss")
    assert [pathlib.Path(f).name for f in files] == ["trials.csv", "trials.md", "merit.png"]
    assert "need at least 2 parameters, the study has 1" in pathlib.Path(files[1]).read_text()
    rows = read_csv(files[0])
    assert all(float(r["seconds"]) >= 0 for r in rows)


def test_a_rewrite_replaces_the_files(tmp_path):
    study = optuna.create_study(study_name="grow")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 3),
                   n_trials=2)
    write_report(study, str(tmp_path), "loss")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 3),
                   n_trials=3)
    files = write_report(study, str(tmp_path), "loss")
    assert len(read_csv(files[0])) == 5
