"""End-to-end tests of pstune (tools/pstune/) on real shards: a small search
of ps-worker's MLP on synthetic data completes with every trial scored, the
best configuration retrained and scored on the test set, and no namespace
left on the shards; a driver killed mid-search (SIGKILL, one of its workers
too) is resumed by rerunning the same command: the study ends with the asked
number of finished trials, the killed trials marked failed and their
namespaces dropped once the leases lapse, and the resumed run draws new
configurations; a wrapped worker command is stopped whole; pruning. Runs
build/bin/pstune as a user does; the shards come from conftest.py's fixture
with short leases. Where a test must catch a trial running, a scripted
worker (pstune_scripted_worker.py) holds it until the test lets it go: no
test depends on how fast the machine is."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import optuna
import pytest

from conftest import BUILD_DIR

PSTUNE = BUILD_DIR / "bin" / "pstune"

SPACE = """\
metric: accuracy
parameters:
  lr: {kind: float, low: 1.0e-3, high: 3.0e-2, log: true, flag: --lr}
  hidden: {kind: int, low: 8, high: 32}
  optimizer: {kind: categorical, choices: [adam, rmsprop], flag: --optimizer}
flags:
  --dataset: synthetic
  --synthetic_train: 3000
  --synthetic_test: 600
  --synthetic_dim: 16
  --synthetic_classes: 4
  --layers: "16,{hidden},4"
  --epochs: 1000
  --log_interval_s: 1
budget: {max_seconds: %(seconds)s, eval_interval_s: 0.5}
"""


def pstune_args(space, shards, out, trials, parallel, extra=()):
    return [str(PSTUNE), "--space", str(space), "--shards", ",".join(shards),
            "--out", str(out), "--study", "t", "--trials", str(trials),
            "--parallel", str(parallel), "--workers", "1", "--seed", "1",
            "--sampler", "random", "--drop_wait_s", "60", "--status_line", "off",
            *extra]


def namespaces_on(shards):
    import pskit
    c = pskit.Client(shards)
    return sorted({n["name"] for s in c.status() for n in s.get("namespaces", [])})


def load(out):
    return optuna.load_study(study_name="t", storage=f"sqlite:///{out}/study.db")


def children_of(pid):
    kids = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(d.name))
    return kids


def alive(pid):
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def space_file(tmp_path):
    def make(seconds):
        p = tmp_path / f"space{seconds}.yaml"
        p.write_text(SPACE % {"seconds": seconds})
        return p
    return make


def test_small_search_end_to_end(shards, space_file, tmp_path):
    addrs = shards(2)
    out = tmp_path / "out"
    r = subprocess.run(pstune_args(space_file(2), addrs, out, 3, 2),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    study = load(out)
    trials = study.get_trials()
    assert len(trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        assert 0.0 <= t.value <= 1.0
        assert t.user_attrs["namespaces"] == [f"t-t{t.number}"]
        assert t.intermediate_values          # the evaluations fed the pruner
    final = study.user_attrs["final"]
    assert final["trial"] == study.best_trial.number
    assert 0.0 < final["test_accuracy"] <= 1.0
    assert (out / "best.json").exists()
    assert "best: trial" in r.stderr and "test accuracy" in r.stderr
    # Every namespace of the study (trials and the final run) was dropped.
    assert namespaces_on(addrs) == []
    # Logs of each process are kept.
    assert (out / "logs" / "t-t0" / "evaluator.log").exists()
    assert (out / "logs" / "t-t0" / "worker0.log").exists()


def test_kfold_trial_runs_folds_in_parallel_namespaces(shards, space_file, tmp_path):
    addrs = shards(2)
    out = tmp_path / "out"
    r = subprocess.run(pstune_args(space_file(2), addrs, out, 1, 1,
                                   ["--folds", "2", "--no_retrain"]),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    (t,) = load(out).get_trials()
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert t.user_attrs["namespaces"] == ["t-t0-f0", "t-t0-f1"]
    merits = t.user_attrs["fold_merits"]
    assert len(merits) == 2
    assert t.value == pytest.approx(sum(merits) / 2)
    assert "merit_std" in t.user_attrs
    log = (out / "logs" / "t-t0-f1" / "evaluator.log").read_text()
    assert "--folds=2" in log and "--fold=1" in log
    assert namespaces_on(addrs) == []


def test_resume_after_killed_driver(shards, tmp_path):
    addrs = shards(2, "--lease_s", "3")
    out = tmp_path / "out"
    space = tmp_path / "noisy.yaml"
    space.write_text(NOISY_SPACE)
    # Trials after trial 0 train until `hold` is removed: the driver is
    # killed while one of them runs, however busy the machine is.
    hold = tmp_path / "hold"
    hold.write_text("")
    args = pstune_args(space, addrs, out, 4, 2,
                       ["--worker_command",
                        f"{sys.executable} {SCRIPTED} --hold_while {hold}",
                        "--no_retrain", "--poll_s", "0.3"])
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    killed_worker = None
    try:
        deadline = time.monotonic() + 120
        while True:  # until one trial is done and another is training
            assert driver.poll() is None, driver.stderr.read()
            assert time.monotonic() < deadline, "no trial finished in 120 s"
            time.sleep(0.3)
            # Not before the driver has created the study (a trial's logs):
            # loading a study.db being created races its schema creation.
            if not (out / "logs").exists():
                continue
            trials = load(out).get_trials()
            states = [t.state for t in trials]
            running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
            if optuna.trial.TrialState.COMPLETE in states and running and \
                    (out / "logs" / f"t-t{running[0].number}" / "worker0.log").exists():
                break
        kids = children_of(driver.pid)
        assert kids, "the driver runs no process"
        # The hardest case: the driver and one worker die at once; the other
        # processes get SIGTERM from the kernel (PR_SET_PDEATHSIG).
        driver.send_signal(signal.SIGKILL)
        killed_worker = kids[0]
        os.kill(killed_worker, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 30
        while any(alive(k) for k in kids):
            assert time.monotonic() < deadline, "workers outlived the killed driver"
            time.sleep(0.2)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        hold.unlink()
    left = load(out)
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in left.get_trials())

    r = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "marked failed" in r.stderr
    trials = load(out).get_trials()
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                 optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 4
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("driver stopped" in t.user_attrs["fail_reason"] for t in failed)
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    assert namespaces_on(addrs) == []


def test_second_driver_on_the_same_study_is_refused(shards, space_file, tmp_path):
    addrs = shards(1)
    out = tmp_path / "out"
    args = pstune_args(space_file(30), addrs, out, 1, 1, ["--no_retrain"])
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "logs" / "t-t0" / "worker0.log").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert "one driver per study" in r.stderr
        # Another --out, the same study in the same storage: refused too.
        other = [*args, "--out", str(tmp_path / "other"),
                 "--storage", f"sqlite:///{out}/study.db"]
        r = subprocess.run(other, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert "one driver per study" in r.stderr
        kids = children_of(first.pid)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM
    assert not any(alive(k) for k in kids)       # it stopped what it started
    assert namespaces_on(addrs) == []
    (t,) = load(out).get_trials()
    assert t.state == optuna.trial.TrialState.FAIL


SCRIPTED = pathlib.Path(__file__).resolve().parent / "pstune_scripted_worker.py"
SCRIPTED_SPACE = """\
metric: accuracy
parameters:
  quality: {kind: categorical, choices: [0.9, 0.5], flag: --quality}
budget: {max_seconds: 2.5, eval_interval_s: 0.2}
"""


def test_worker_command_and_pruning(shards, tmp_path):
    """--worker_command runs a Python worker with psrun's environment; the
    halving pruner stops trials whose scripted quality is worse than an
    earlier trial's: they end PRUNED after a few evaluations, and every
    namespace is dropped. The worse trials report until they are stopped
    (--hold_below), so pruning does not race their end on a busy machine."""
    addrs = shards(2)
    out = tmp_path / "out"
    space = tmp_path / "scripted.yaml"
    space.write_text(SCRIPTED_SPACE)
    args = pstune_args(space, addrs, out, 5, 1,
                       ["--worker_command",
                        f"{sys.executable} {SCRIPTED} --hold_below 0.6",
                        "--workers", "2", "--pruner", "halving", "--seed", "6",
                        "--poll_s", "0.3", "--max_seconds", "3",
                        "--retrain_seconds", "1.5"])
    r = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    study = load(out)
    trials = study.get_trials()
    assert len(trials) == 5
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete
    best_before = {}
    top = None
    for t in trials:
        best_before[t.number] = top
        top = max(top or 0, t.params["quality"])
    for t in pruned:
        assert t.params["quality"] == 0.5
        assert best_before[t.number] == 0.9      # pruned only behind a better trial
        assert max(t.intermediate_values.values()) < \
            max(complete[0].intermediate_values.values())
        assert "pruned after" in t.user_attrs["reason"]
    for t in trials:
        if t.params["quality"] == 0.5 and best_before[t.number] == 0.9:
            assert t.state == optuna.trial.TrialState.PRUNED, t.number
    assert study.best_trial.params["quality"] == 0.9
    assert study.best_value == pytest.approx(0.9)
    # The final run retrains the best configuration (no fold flags).
    assert study.user_attrs["final"]["test_accuracy"] > 0.8
    log = (out / "logs" / "t-t0" / "worker1.log").read_text()
    assert "scripted worker rank 1 of 2 ns t-t0 folds 5 fold 0" in log
    final_log = (out / "logs" / "t-final" / "evaluator.log").read_text()
    assert "scripted evaluator rank 0 of 1 ns t-final folds 0 fold 0" in final_log
    # --max_seconds replaces the file's 2.5 s for the trials, and
    # --retrain_seconds gives the final run its own time, the test set scored
    # at its end.
    assert "--max_seconds=3" in log and "--max_seconds=2.5" not in log
    assert "--max_seconds=1.5" in final_log and "--eval_interval_s=1.5" in final_log
    assert study.user_attrs["final"]["budget_s"] == 1.5
    assert namespaces_on(addrs) == []


NOISY_SPACE = """\
metric: accuracy
parameters:
  quality: {kind: categorical, choices: [0.9, 0.5], flag: --quality}
  noise: {kind: float, low: 0.0, high: 1.0, flag: --noise}
budget: {max_seconds: 0.6, eval_interval_s: 0.2}
"""


def test_resumed_study_draws_new_configurations(shards, tmp_path):
    """Rerunning a study with more --trials and the same --seed must not
    replay the first run's configurations (the sampler is seeded from the
    seed and the study's size)."""
    addrs = shards(1)
    out = tmp_path / "out"
    space = tmp_path / "noisy.yaml"
    space.write_text(NOISY_SPACE)
    command = ["--worker_command", f"{sys.executable} {SCRIPTED}", "--no_retrain"]
    for trials in (2, 4):
        r = subprocess.run(pstune_args(space, addrs, out, trials, 1, command),
                           capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr
    trials = load(out).get_trials()
    assert len(trials) == 4
    first = [t.params["noise"] for t in trials[:2]]
    for t in trials[2:]:
        assert t.params["noise"] not in first, (t.number, first)


def test_wrapped_worker_command_is_stopped_whole(shards, tmp_path):
    """A --worker_command that is a shell wrapper (sh -c '...; exit $?'): on
    SIGTERM the driver stops the real workers too (their process groups),
    not only the shells, and writes the table of the trials so far. The
    workers ignore SIGTERM: further signals (SIGHUP, SIGINT) during the
    shutdown make it kill them at once, without a traceback."""
    addrs = shards(1, "--lease_s", "3")
    out = tmp_path / "out"
    space = tmp_path / "long.yaml"
    # The job outlasts the driver's wait for the drop (--drop_wait_s 5): only
    # stopping the real workers ends it.
    space.write_text(SCRIPTED_SPACE.replace("max_seconds: 2.5", "max_seconds: 600"))
    wrapper = f"sh -c '{sys.executable} {SCRIPTED} --ignore_term \"$@\"; exit $?' sh"
    args = pstune_args(space, addrs, out, 1, 1,
                       ["--worker_command", wrapper, "--workers", "2", "--no_retrain",
                        "--drop_wait_s", "5"])
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    logs = [out / "logs" / "t-t0" / n for n in ("evaluator.log", "worker0.log",
                                                  "worker1.log")]
    pids = []
    try:
        deadline = time.monotonic() + 120
        while len(pids) < 3:
            assert driver.poll() is None, driver.stderr.read()
            assert time.monotonic() < deadline, "the scripted workers did not start"
            time.sleep(0.2)
            pids = []
            for log in logs:
                text = log.read_text() if log.exists() else ""
                if " pid " in text:
                    pids.append(int(text.split(" pid ")[1].split()[0]))
        assert all(p not in children_of(driver.pid) for p in pids)  # grandchildren
        driver.send_signal(signal.SIGTERM)
        err = ""
        while "pstune: stopping" not in err:   # the shutdown has begun
            line = driver.stderr.readline()
            assert line, err
            err += line
        driver.send_signal(signal.SIGHUP)
        driver.send_signal(signal.SIGINT)
        err += driver.communicate(timeout=120)[1]
        left = [p for p in pids if alive(p)]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)
    assert driver.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert not left, "the wrapped workers outlived the driver"
    assert (out / "trials.csv").exists()
    (t,) = load(out).get_trials()
    assert t.state == optuna.trial.TrialState.FAIL
